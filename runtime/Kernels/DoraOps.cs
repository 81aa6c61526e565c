// DoRA's kernels (shaders/dora.comp): per-output-row squared norms of a frozen base weight decoded from its 4-bit (or
// GGUF, or fp32) form, the exact row norm of W0 + s·B·A from rank-sized terms, and scaling the columns of [rows, out]
// activations by a per-output vector.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

public static class DoraOps
{
    [StructLayout(LayoutKind.Sequential)]
    private struct RowPush { public uint Rows, GroupsX, FirstRow, WOffset, OutOffset, QBlock, QCols; public float QOffset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct NormPush { public uint Rows, GroupsX, Rank; public float S; public uint W2Offset, BOffset, CtOffset, BgOffset, MOffset, ScaleOffset, InvOffset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct ColumnsPush { public uint Count, GroupsX, Cols, XOffset, VOffset, YOffset; }

    /// <summary>output[j] = Σ_i deq(W)[j, i]² (or its square root with <paramref name="sqrt"/>) of a quantized weight [out, in]; writes output [out].</summary>
    public static void RowSquaredNorms(DeviceQuantizedWeight w, DeviceTensor output, bool sqrt = false)
    {
        BasicOps.RequireF32(output);
        OpChecks.RequireCount(output, w.OutFeatures, $"row norms of '{w.Name}'");
        var ctx = w.Context;
        var p = ctx.Pipelines.Get(ShaderCatalog.Find(new ShaderKey(ShaderFamily.DoraRowSumsq, Format: QuantizedMatMul.FormatOf(w))),
            BasicOps.RowWorkgroup(w.InFeatures), sqrt ? 1u : 0u);
        var q = QuantizedMatMul.QuantBindings(w);
        foreach (var piece in Pieces.Split(w.OutFeatures, [output], [1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, piece.Count);
            ctx.Commands.Dispatch(p, [q[0], q[1], q[2], q[3], Binding.Write(piece.Ranges[0])],
                new RowPush
                {
                    Rows = (uint)piece.Count, GroupsX = gx, FirstRow = (uint)piece.Start, OutOffset = piece.Offsets[0],
                    QBlock = (uint)w.Blocksize, QCols = (uint)w.InFeatures, QOffset = w.DqOffset,
                }, gx, gy, 1, "dora_row_sumsq");
        }
    }

    /// <summary>output[j] = Σ_i W[j, i]² (or its square root) of an fp32 weight [out, in]; writes output [out].</summary>
    public static void RowSquaredNorms(DeviceTensor w, DeviceTensor output, bool sqrt = false)
    {
        BasicOps.RequireF32(w, output);
        long cols = w.Shape[^1], rows = w.Count / Math.Max(cols, 1);
        OpChecks.RequireCount(output, rows, $"row norms of '{w.Name}'");
        var ctx = w.Context;
        var p = ctx.Pipelines.Get(ShaderId.DoraRowSumsqDense, BasicOps.RowWorkgroup(cols), sqrt ? 1u : 0u);
        foreach (var piece in Pieces.Split(rows, [w, output], [cols, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, piece.Count);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new RowPush { Rows = (uint)piece.Count, GroupsX = gx, WOffset = piece.Offsets[0], OutOffset = piece.Offsets[1], QCols = (uint)cols },
                gx, gy, 1, "dora_row_sumsq");
        }
    }

    /// <summary>
    /// The row norm of W0 + s·B·A without forming it: n_j = √(w2_j + Σ_k B[j,k]·(2s·Ct[k,j] + s²·BG[j,k])) with w2 = ‖W0_j‖²
    /// [out], B [out, r], Ct = A·W0ᵀ [r, out], BG = B·(A·Aᵀ) [out, r]; writes scale = m / n and invN = 1 / n ([out] each).
    /// </summary>
    public static void NormScale(DeviceTensor w2, DeviceTensor b, DeviceTensor ct, DeviceTensor bg, DeviceTensor m, float s,
        DeviceTensor scale, DeviceTensor invN)
    {
        BasicOps.RequireF32(w2, b, ct, bg, m, scale, invN);
        long rows = w2.Count;
        long rank = rows == 0 ? 0 : b.Count / rows;
        if (rank < 1 || b.Count != rows * rank) throw new ArgumentException($"DoRA norm: B '{b.Name}' {b.ShapeString} must be [{rows}, r]");
        OpChecks.RequireCount(ct, rows * rank, "DoRA norm: Ct = A·W0ᵀ [r, out]");
        OpChecks.RequireCount(bg, rows * rank, "DoRA norm: B·A·Aᵀ [out, r]");
        foreach (var (t, what) in new[] { (m, "magnitude"), (scale, "scale"), (invN, "inverse norm") })
            OpChecks.RequireCount(t, rows, "DoRA norm: " + what);
        var ctx = w2.Context;
        var operands = new[] { w2, b, ct, bg, m, scale, invN };
        var bound = operands.Select(OpChecks.Whole).ToArray();
        var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(rows));
        ctx.Commands.Dispatch(ctx.Pipelines.Get(ShaderId.DoraNormScale, BasicOps.WorkgroupSize),
            [.. bound.Take(5).Select(x => Binding.Read(x.Range)), Binding.Write(bound[5].Range), Binding.Write(bound[6].Range)],
            new NormPush
            {
                Rows = (uint)rows, GroupsX = gx, Rank = (uint)rank, S = s, W2Offset = bound[0].Offset, BOffset = bound[1].Offset,
                CtOffset = bound[2].Offset, BgOffset = bound[3].Offset, MOffset = bound[4].Offset, ScaleOffset = bound[5].Offset, InvOffset = bound[6].Offset,
            }, gx, gy, 1, "dora_norm_scale");
    }

    /// <summary>y[t, j] = x[t, j]·v[j] for x, y [rows, cols] and v [cols]; y may be x. Writes y.</summary>
    public static void ScaleColumns(DeviceTensor x, DeviceTensor v, DeviceTensor y)
    {
        BasicOps.RequireF32(x, v, y);
        long cols = v.Count;
        if (cols == 0 || x.Shape[^1] != cols) throw new ArgumentException($"column scaling: '{x.Name}' {x.ShapeString} should end in v's length {cols}");
        OpChecks.RequireSameCount(x, y, "column scaling output");
        long rows = x.Count / cols;
        if (rows == 0) return;
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.DoraScaleColumns, BasicOps.WorkgroupSize);
        var (vRange, vOffset) = OpChecks.Whole(v);
        foreach (var piece in Pieces.Split(rows, [x, y], [cols, cols]))
        {
            long count = piece.Count * cols;
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(vRange), Binding.Write(piece.Ranges[1])],
                new ColumnsPush { Count = (uint)count, GroupsX = gx, Cols = (uint)cols, XOffset = piece.Offsets[0], VOffset = vOffset, YOffset = piece.Offsets[1] },
                gx, gy, 1, "dora_scale_columns");
        }
    }
}
