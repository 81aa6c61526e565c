// Bias add over the last dimension and its gradient (a deterministic column sum); split-aware over rows.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>y [M,N] += bias [N] per row; db [N] (= or +=) Σ_m dy[m,:] summed in row order (one invocation per column).</summary>
public static class Bias
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, Rows, Cols, YOffset, BOffset; }

    /// <summary>y[m,n] += bias[n]; y's last dimension must equal bias's length. Accumulates y in place.</summary>
    public static void Add(DeviceTensor y, DeviceTensor bias)
    {
        long rows = Check(y, bias, "bias add", "y", "bias");
        long n = bias.Count;
        if (rows == 0 || n == 0) return;
        var ctx = y.Context;
        var p = ctx.Pipelines.Get(ShaderId.BiasAdd, BasicOps.WorkgroupSize, 0u);
        var (bRange, bOffset) = OpChecks.Whole(bias);
        foreach (var piece in Pieces.Split(rows, [y], [n]))
        {
            long count = piece.Count * n;
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(count));
            ctx.Commands.Dispatch(p, [Binding.ReadWrite(piece.Ranges[0]), Binding.Read(bRange)],
                new Push { Count = (uint)count, GroupsX = gx, Rows = (uint)piece.Count, Cols = (uint)n, YOffset = piece.Offsets[0], BOffset = bOffset },
                gx, gy, 1, "bias_add");
        }
    }

    /// <summary>db[n] = Σ_m dy[m,n], or db[n] += that sum when <paramref name="accumulate"/>. Deterministic.</summary>
    public static void Grad(DeviceTensor dy, DeviceTensor db, bool accumulate)
    {
        long rows = Check(dy, db, "bias gradient", "dy", "db");
        long n = db.Count;
        if (n == 0) return;
        if (rows == 0)
        {
            if (!accumulate) BasicOps.Fill(db, 0);
            return;
        }
        var ctx = dy.Context;
        var (dbRange, dbOffset) = OpChecks.Whole(db);
        var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(n));
        bool first = true;
        foreach (var piece in Pieces.Split(rows, [dy], [n]))
        {
            // Later pieces of a split dy add their column sums to what the earlier ones wrote.
            bool acc = accumulate || !first;
            first = false;
            var p = ctx.Pipelines.Get(ShaderId.BiasGrad, BasicOps.WorkgroupSize, acc ? 1u : 0u);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), acc ? Binding.ReadWrite(dbRange) : Binding.Write(dbRange)],
                new Push { Count = (uint)n, GroupsX = gx, Rows = (uint)piece.Count, Cols = (uint)n, YOffset = piece.Offsets[0], BOffset = dbOffset },
                gx, gy, 1, "bias_grad");
        }
    }

    private static long Check(DeviceTensor y, DeviceTensor bias, string what, string yRole, string bRole)
    {
        BasicOps.RequireF32(y, bias);
        long n = bias.Count;
        long last = y.Shape.Length == 0 ? 1 : y.Shape[^1];
        if (last != n)
            throw new ArgumentException($"{what}: {yRole} '{y.Name}' {y.ShapeString} should end in {bRole}'s length {n} ('{bias.Name}' {bias.ShapeString})");
        return n == 0 ? 0 : y.Count / n;
    }
}
