// Fill, copy, elementwise add/mul/scale, row reductions and row softmax on device tensors (fp32), split-aware.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class BasicOps
{
    public const uint WorkgroupSize = 256;

    [StructLayout(LayoutKind.Sequential)]
    private struct CountPush { public uint Count, GroupsX; public float Value; public uint Offset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CopyPush { public uint Count, GroupsX, SrcOffset, DstOffset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct ElementwisePush { public uint Count, GroupsX; public float Alpha, Beta; public uint AOffset, BOffset, COffset; }

    [StructLayout(LayoutKind.Sequential)]
    private struct RowsPush { public uint Rows, Cols, GroupsX, XOffset, YOffset; }

    private enum ElementwiseOp : uint { Add = 0, Mul = 1, Scale = 2 }

    public static void Fill(DeviceTensor t, float value)
    {
        RequireF32(t);
        var ctx = t.Context;
        var p = ctx.Pipelines.Get(ShaderId.Fill, WorkgroupSize);
        foreach (var piece in Pieces.Split(t.Count, [t], [1]))
        {
            var (gx, gy) = Pieces.Grid(Groups(piece.Count), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [Binding.Write(piece.Ranges[0])], new CountPush { Count = (uint)piece.Count, GroupsX = gx, Value = value, Offset = piece.Offsets[0] }, gx, gy);
        }
    }

    /// <summary>dst = src (same element count; shapes may differ).</summary>
    public static void Copy(DeviceTensor src, DeviceTensor dst)
    {
        RequireF32(src, dst);
        var ctx = src.Context;
        foreach (var piece in Pieces.Split(src.Count, [src, dst], [1, 1]))
        {
            bool vec4 = piece.Count % 4 == 0 && piece.Offsets[0] % 4 == 0 && piece.Offsets[1] % 4 == 0
                        && piece.Ranges[0].Size % 16 == 0 && piece.Ranges[1].Size % 16 == 0;
            uint div = vec4 ? 4u : 1u;
            long n = vec4 ? piece.Count / 4 : piece.Count;
            var p = ctx.Pipelines.Get(vec4 ? ShaderId.CopyVec4 : ShaderId.Copy, WorkgroupSize);
            var (gx, gy) = Pieces.Grid(Groups(n), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new CopyPush { Count = (uint)n, GroupsX = gx, SrcOffset = piece.Offsets[0] / div, DstOffset = piece.Offsets[1] / div }, gx, gy);
        }
    }

    /// <summary>c = a + b.</summary>
    public static void Add(DeviceTensor a, DeviceTensor b, DeviceTensor c) => Binary(ElementwiseOp.Add, a, b, c, 1, 0);

    /// <summary>c = a ⊙ b.</summary>
    public static void Mul(DeviceTensor a, DeviceTensor b, DeviceTensor c) => Binary(ElementwiseOp.Mul, a, b, c, 1, 0);

    /// <summary>c = alpha·a + beta.</summary>
    public static void Scale(DeviceTensor a, DeviceTensor c, float alpha, float beta = 0) => Binary(ElementwiseOp.Scale, a, a, c, alpha, beta);

    private static void Binary(ElementwiseOp op, DeviceTensor a, DeviceTensor b, DeviceTensor c, float alpha, float beta)
    {
        RequireF32(a, b, c);
        var ctx = a.Context;
        var p = ctx.Pipelines.Get(ShaderId.Elementwise, WorkgroupSize, (uint)op);
        foreach (var piece in Pieces.Split(a.Count, [a, b, c], [1, 1, 1]))
        {
            var (gx, gy) = Pieces.Grid(Groups(piece.Count), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Write(piece.Ranges[2])],
                new ElementwisePush
                {
                    Count = (uint)piece.Count, GroupsX = gx, Alpha = alpha, Beta = beta,
                    AOffset = piece.Offsets[0], BOffset = piece.Offsets[1], COffset = piece.Offsets[2],
                }, gx, gy);
        }
    }

    /// <summary>output[r] = Σ input[r, :] over the last dimension (input [rows, cols], output [rows]).</summary>
    public static void SumRows(DeviceTensor input, DeviceTensor output) => ReduceRows(input, output, 0);

    /// <summary>output[r] = max input[r, :].</summary>
    public static void MaxRows(DeviceTensor input, DeviceTensor output) => ReduceRows(input, output, 1);

    private static void ReduceRows(DeviceTensor input, DeviceTensor output, uint op)
    {
        RequireF32(input, output);
        long cols = input.Shape[^1], rows = input.Count / Math.Max(cols, 1);
        if (output.Count != rows) throw new ArgumentException($"row reduction of '{input.Name}' {input.ShapeString} needs an output of {rows} elements, got {output.ShapeString}");
        var ctx = input.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.ReduceRowsSubgroup : ShaderId.ReduceRows, RowWorkgroup(cols), op, 0);
        foreach (var piece in Pieces.Split(rows, [input, output], [cols, 1]))
        {
            var (gx, gy) = Pieces.Grid(piece.Count, ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.ReadWrite(piece.Ranges[1])],
                new RowsPush { Rows = (uint)piece.Count, Cols = (uint)cols, GroupsX = gx, XOffset = piece.Offsets[0], YOffset = piece.Offsets[1] }, gx, gy);
        }
    }

    /// <summary>The sum of all elements of <paramref name="input"/> into the 1-element tensor <paramref name="result"/>.</summary>
    public static void SumAll(DeviceTensor input, DeviceTensor result) => ReduceAll(input, result, 0);

    /// <summary>The maximum of all elements of <paramref name="input"/> into the 1-element tensor <paramref name="result"/>.</summary>
    public static void MaxAll(DeviceTensor input, DeviceTensor result) => ReduceAll(input, result, 1);

    private static void ReduceAll(DeviceTensor input, DeviceTensor result, uint op)
    {
        RequireF32(input, result);
        if (result.Count != 1) throw new ArgumentException($"'{result.Name}' must hold one element");
        var ctx = input.Context;
        bool sg = ctx.Caps.SubgroupArithmetic;
        var first = ctx.Pipelines.Get(sg ? ShaderId.ReduceRowsSubgroup : ShaderId.ReduceRows, WorkgroupSize, op, 0);
        var accumulate = ctx.Pipelines.Get(sg ? ShaderId.ReduceRowsSubgroup : ShaderId.ReduceRows, WorkgroupSize, op, 1);
        var pieces = Pieces.Split(input.Count, [input], [1]);
        for (int i = 0; i < pieces.Count; i++)
        {
            // Each piece is one row of a single-row reduction; later pieces combine with what is already there.
            ctx.Commands.Dispatch(i == 0 ? first : accumulate, [Binding.Read(pieces[i].Ranges[0]), Binding.ReadWrite(result.Range)],
                new RowsPush { Rows = 1, Cols = (uint)pieces[i].Count, GroupsX = 1, XOffset = pieces[i].Offsets[0] }, 1, 1);
        }
    }

    /// <summary>output[r, :] = softmax(input[r, :]) over the last dimension; output may be input.</summary>
    public static void SoftmaxRows(DeviceTensor input, DeviceTensor output)
    {
        RequireF32(input, output);
        long cols = input.Shape[^1], rows = input.Count / Math.Max(cols, 1);
        var ctx = input.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.SoftmaxRowsSubgroup : ShaderId.SoftmaxRows, RowWorkgroup(cols));
        foreach (var piece in Pieces.Split(rows, [input, output], [cols, cols]))
        {
            var (gx, gy) = Pieces.Grid(piece.Count, ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new RowsPush { Rows = (uint)piece.Count, Cols = (uint)cols, GroupsX = gx, XOffset = piece.Offsets[0], YOffset = piece.Offsets[1] }, gx, gy);
        }
    }

    internal static long Groups(long n) => (n + WorkgroupSize - 1) / WorkgroupSize;

    /// <summary>
    /// Workgroup size for one-workgroup-per-row kernels: the power of two covering the row, between 32 and 256, so short
    /// rows (dim 64) do not pay for idle invocations at every barrier.
    /// </summary>
    public static uint RowWorkgroup(long cols)
    {
        uint n = 32;
        while (n < cols && n < WorkgroupSize) n <<= 1;
        return n;
    }

    internal static void RequireF32(params DeviceTensor[] ts)
    {
        foreach (var t in ts)
        {
            if (t.DType != DType.F32) throw new ArgumentException($"'{t.Name}' is {t.DType}; this kernel takes F32");
            ObjectDisposedException.ThrowIf(t.IsDisposed, t);
        }
    }
}
