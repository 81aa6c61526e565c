// QA-LoRA input pooling: the mean of each group of g consecutive input columns, and its gradient; split-aware over rows.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// x [M,K] → y [M,K/g] with y[m,l] = (1/g)·Σ_{i&lt;g} x[m, l·g+i] (summed in order in fp32, then multiplied by fp32(1/g));
/// backward dx[m,j] (= or +=) (1/g)·dy[m, j/g]. K (the last dimension) must be a multiple of g.
/// </summary>
public static class GroupPool
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, Group; public float InvG; public uint InOffset, OutOffset; }

    /// <summary>y[m,l] = mean of x[m, l·g .. l·g+g−1]. Writes y.</summary>
    public static void Forward(DeviceTensor x, DeviceTensor y, int groupSize)
    {
        var (rows, k, l) = Check(x, y, groupSize, "group pooling", "x", "y");
        Dispatch(ShaderId.GroupPoolForward, 0, x, y, rows, k, l, groupSize, Binding.Write, "group_pool_forward");
    }

    /// <summary>dx[m,j] = (1/g)·dy[m, j/g], written or added to dx when <paramref name="accumulate"/>.</summary>
    public static void Backward(DeviceTensor dy, DeviceTensor dx, int groupSize, bool accumulate)
    {
        var (rows, k, l) = Check(dx, dy, groupSize, "group pooling backward", "dx", "dy");
        Dispatch(ShaderId.GroupPoolBackward, accumulate ? 1u : 0u, dy, dx, rows, l, k, groupSize,
            accumulate ? Binding.ReadWrite : Binding.Write, "group_pool_backward");
    }

    private static void Dispatch(ShaderId id, uint accumulate, DeviceTensor input, DeviceTensor output, long rows, long inCols, long outCols,
        int groupSize, Func<VkPeft.Runtime.Memory.BufferRange, Binding> outBinding, string label)
    {
        if (rows == 0 || outCols == 0) return;
        var ctx = input.Context;
        var p = ctx.Pipelines.Get(id, BasicOps.WorkgroupSize, accumulate);
        foreach (var piece in Pieces.Split(rows, [input, output], [inCols, outCols]))
        {
            long count = piece.Count * outCols;
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), outBinding(piece.Ranges[1])],
                new Push
                {
                    Count = (uint)count, GroupsX = gx, Group = (uint)groupSize, InvG = 1f / groupSize,
                    InOffset = piece.Offsets[0], OutOffset = piece.Offsets[1],
                }, gx, gy, 1, label);
        }
    }

    /// <summary>(rows M, columns K of the full tensor, columns K/g of the pooled tensor).</summary>
    private static (long Rows, long K, long L) Check(DeviceTensor full, DeviceTensor pooled, int groupSize, string what, string fullRole, string pooledRole)
    {
        BasicOps.RequireF32(full, pooled);
        if (groupSize < 1) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, $"{what}: the group size must be at least 1");
        long k = full.Shape.Length == 0 ? 1 : full.Shape[^1];
        if (k % groupSize != 0)
            throw new ArgumentException($"{what}: {fullRole} '{full.Name}' {full.ShapeString} has K = {k} columns, not a multiple of the group size {groupSize}");
        long l = k / groupSize, rows = k == 0 ? 0 : full.Count / k;
        if (pooled.Count != rows * l || (pooled.Count > 0 && pooled.Shape[^1] != l))
            throw new ArgumentException($"{what}: {pooledRole} '{pooled.Name}' {pooled.ShapeString} should be [{rows}, {l}] ({fullRole} {full.ShapeString}, group size {groupSize})");
        return (rows, k, l);
    }
}
