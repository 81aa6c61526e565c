// Gradient utilities: scale-and-accumulate (gradient accumulation) and partial sums of squares (global-norm clipping).
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

public static class GradOps
{
    [StructLayout(LayoutKind.Sequential)]
    private struct AxpyPush { public uint Count, GroupsX; public float Alpha; public uint XOffset, YOffset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct SumSquaresPush { public uint Count, Chunk, Groups, Accumulate, XOffset, YOffset; }

    /// <summary>y += alpha·x (equal element counts). Accumulates y; x may be y.</summary>
    public static void Axpy(DeviceTensor x, DeviceTensor y, float alpha)
    {
        BasicOps.RequireF32(x, y);
        OpChecks.RequireSameCount(x, y, "axpy");
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.Axpy, BasicOps.WorkgroupSize);
        foreach (var piece in Pieces.Split(x.Count, [x, y], [1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.ReadWrite(piece.Ranges[1])],
                new AxpyPush { Count = (uint)piece.Count, GroupsX = gx, Alpha = alpha, XOffset = piece.Offsets[0], YOffset = piece.Offsets[1] },
                gx, gy, 1, "axpy");
        }
    }

    /// <summary>
    /// <see cref="SumOfSquares"/> of many tensors stored in one buffer, in one dispatch: <paramref name="table"/> [tensors, 2]
    /// (U32) holds each tensor's element offset in <paramref name="flat"/> and its element count. Partial j becomes the sum
    /// over tensors, in table order, of the sum of squares of chunk j of that tensor (chunk = ceil(count / k)) — the same
    /// fp32 operations in the same order as one accumulating <see cref="SumOfSquares"/> per tensor, so bit for bit equal.
    /// <paramref name="flat"/> must lie in one bindable range (one segment).
    /// </summary>
    public static void SumOfSquaresOfSlices(DeviceTensor flat, DeviceTensor table, DeviceTensor partials, bool accumulate = false)
    {
        BasicOps.RequireF32(flat, partials);
        if (table.DType != DType.U32 || table.Shape.Length != 2 || table.Shape[1] != 2)
            throw new ArgumentException($"sum of squares: table '{table.Name}' must be U32 [tensors, 2], not {table.DType} {table.ShapeString}");
        long k = partials.Count;
        var ctx = flat.Context;
        if (k < 1 || k > ctx.Caps.MaxComputeWorkGroupCount[0]) throw new ArgumentException($"sum of squares: '{partials.Name}' must hold 1 to {ctx.Caps.MaxComputeWorkGroupCount[0]} partial sums");
        if (flat.Segments.Count != 1) throw new ArgumentException($"sum of squares of slices: '{flat.Name}' spans {flat.Segments.Count} segments; it must lie in one");
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.SumSquaresTableSubgroup : ShaderId.SumSquaresTable, BasicOps.WorkgroupSize);
        var (xRange, xOffset) = OpChecks.Whole(flat);
        var (yRange, yOffset) = OpChecks.Whole(partials);
        var (tRange, tOffset) = OpChecks.Whole(table);
        if (tOffset != 0) throw new ArgumentException($"sum of squares of slices: table '{table.Name}' must start its binding (a tensor of its own)");
        if (table.Rows == 0)
        {
            if (!accumulate) BasicOps.Fill(partials, 0);
            return;
        }
        ctx.Commands.Dispatch(p, [Binding.Read(xRange), Binding.ReadWrite(yRange), Binding.Read(tRange)],
            new SumSquaresPush { Count = (uint)table.Rows, Chunk = 0, Groups = (uint)k, Accumulate = accumulate ? 1u : 0u, XOffset = xOffset, YOffset = yOffset },
            (uint)k, 1, 1, "sum_squares_table");
    }

    /// <summary>
    /// Sums of squares of x into <paramref name="partials"/> [k]: each of the k workgroups squares and sums one contiguous
    /// chunk of x, so Σ partials = Σ x². Writes the partials, or adds to them when <paramref name="accumulate"/> (to
    /// gather many tensors before one <see cref="BasicOps.SumAll"/>). k = 1 gives the total directly; k ≈ 64–256 spreads
    /// large tensors over the device. Deterministic.
    /// </summary>
    public static void SumOfSquares(DeviceTensor x, DeviceTensor partials, bool accumulate = false)
    {
        BasicOps.RequireF32(x, partials);
        long k = partials.Count;
        if (k < 1 || k > x.Context.Caps.MaxComputeWorkGroupCount[0]) throw new ArgumentException($"sum of squares: '{partials.Name}' must hold 1 to {x.Context.Caps.MaxComputeWorkGroupCount[0]} partial sums");
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.SumSquaresSubgroup : ShaderId.SumSquares, BasicOps.WorkgroupSize);
        var (yRange, yOffset) = OpChecks.Whole(partials);
        var pieces = x.Count == 0 ? [] : Pieces.Split(x.Count, [x], [1]);
        if (pieces.Count == 0)
        {
            if (!accumulate) BasicOps.Fill(partials, 0);
            return;
        }
        for (int i = 0; i < pieces.Count; i++)
        {
            var piece = pieces[i];
            long chunk = (piece.Count + k - 1) / k;
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.ReadWrite(yRange)],
                new SumSquaresPush
                {
                    Count = (uint)piece.Count, Chunk = (uint)chunk, Groups = (uint)k, Accumulate = accumulate || i > 0 ? 1u : 0u,
                    XOffset = piece.Offsets[0], YOffset = yOffset,
                }, (uint)k, 1, 1, "sum_squares");
        }
    }
}
