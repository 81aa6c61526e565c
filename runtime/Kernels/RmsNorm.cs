// RMSNorm over the last dimension: forward, input gradient (weight frozen) and optional weight gradient; split-aware over rows.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// y = x · rstd ⊙ w with rstd = 1 / sqrt(mean(x²) + eps) per row (eps inside the square root, weight multiplied after
/// normalizing, as in HF LlamaRMSNorm and llama2.c). x, y, dy, dx are [rows, dim]; w and dw are [dim]; rstd is [rows].
/// </summary>
public static class RmsNorm
{
    [StructLayout(LayoutKind.Sequential)]
    private struct ForwardPush
    {
        public uint Rows, Dim, GroupsX;
        public float Eps;
        public uint WriteRstd, XOffset, WOffset, YOffset, RstdOffset;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct BackwardPush
    {
        public uint Rows, Dim, GroupsX;
        public float Eps;
        public uint WriteRstd, XOffset, WOffset, DyOffset, DxOffset, RstdOffset;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct WeightGradPush { public uint Rows, Dim, GroupsX, XOffset, DyOffset, RstdOffset, DwOffset; }

    /// <summary>Writes y (may be x) and, when given, rstd [rows].</summary>
    public static void Forward(DeviceTensor x, DeviceTensor w, DeviceTensor y, float eps, DeviceTensor? rstd = null)
    {
        var (rows, dim) = Check(x, w, y, rstd);
        if (rows == 0 || dim == 0) return;
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.RmsnormForwardSubgroup : ShaderId.RmsnormForward, BasicOps.RowWorkgroup(dim));
        var (wRange, wOffset) = OpChecks.Whole(w);
        foreach (var piece in Pieces.Split(rows, rstd is null ? [x, y] : [x, y, rstd], rstd is null ? [dim, dim] : [dim, dim, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, piece.Count);
            var rstdBinding = rstd is null ? Binding.Read(wRange) : Binding.Write(piece.Ranges[2]);   // unused when not written
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(wRange), Binding.Write(piece.Ranges[1]), rstdBinding],
                new ForwardPush
                {
                    Rows = (uint)piece.Count, Dim = (uint)dim, GroupsX = gx, Eps = eps, WriteRstd = rstd is null ? 0u : 1u,
                    XOffset = piece.Offsets[0], WOffset = wOffset, YOffset = piece.Offsets[1], RstdOffset = rstd is null ? 0 : piece.Offsets[2],
                }, gx, gy, 1, "rmsnorm_forward");
        }
    }

    /// <summary>
    /// dx = rstd·(w ⊙ dy) − x·rstd³·Σ(w ⊙ dy ⊙ x)/dim per row. Writes dx (may be dy), or adds into it when
    /// <paramref name="accumulate"/> (e.g. straight into the residual stream's gradient). When given, rstd [rows] is
    /// written for <see cref="AccumulateWeightGrad"/>.
    /// </summary>
    public static void Backward(DeviceTensor x, DeviceTensor w, DeviceTensor dy, DeviceTensor dx, float eps, bool accumulate = false, DeviceTensor? rstd = null)
    {
        var (rows, dim) = Check(x, w, dy, rstd);
        OpChecks.RequireSameCount(x, dx, "rmsnorm input gradient");
        BasicOps.RequireF32(dx);
        if (rows == 0 || dim == 0) return;
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.RmsnormBackwardSubgroup : ShaderId.RmsnormBackward, BasicOps.RowWorkgroup(dim), accumulate ? 1u : 0u);
        var (wRange, wOffset) = OpChecks.Whole(w);
        DeviceTensor[] operands = rstd is null ? [x, dy, dx] : [x, dy, dx, rstd];
        long[] units = rstd is null ? [dim, dim, dim] : [dim, dim, dim, 1];
        foreach (var piece in Pieces.Split(rows, operands, units))
        {
            var (gx, gy) = OpChecks.Grid(ctx, piece.Count);
            var rstdBinding = rstd is null ? Binding.Read(wRange) : Binding.Write(piece.Ranges[3]);
            ctx.Commands.Dispatch(p,
                [Binding.Read(piece.Ranges[0]), Binding.Read(wRange), Binding.Read(piece.Ranges[1]),
                 accumulate ? Binding.ReadWrite(piece.Ranges[2]) : Binding.Write(piece.Ranges[2]), rstdBinding],
                new BackwardPush
                {
                    Rows = (uint)piece.Count, Dim = (uint)dim, GroupsX = gx, Eps = eps, WriteRstd = rstd is null ? 0u : 1u,
                    XOffset = piece.Offsets[0], WOffset = wOffset, DyOffset = piece.Offsets[1], DxOffset = piece.Offsets[2],
                    RstdOffset = rstd is null ? 0 : piece.Offsets[3],
                }, gx, gy, 1, "rmsnorm_backward");
        }
    }

    /// <summary>dw[c] += Σ_r dy[r, c]·x[r, c]·rstd[r] (rstd from <see cref="Forward"/> or <see cref="Backward"/>). Accumulates dw.</summary>
    public static void AccumulateWeightGrad(DeviceTensor x, DeviceTensor dy, DeviceTensor rstd, DeviceTensor dw)
    {
        BasicOps.RequireF32(x, dy, rstd, dw);
        long dim = dw.Count, rows = dim == 0 ? 0 : x.Count / dim;
        if (dim == 0 || x.Count % dim != 0) throw new ArgumentException($"rmsnorm weight gradient: '{x.Name}' {x.ShapeString} is not rows of {dim}");
        OpChecks.RequireSameCount(x, dy, "rmsnorm weight gradient");
        OpChecks.RequireCount(rstd, rows, "rmsnorm weight gradient rstd");
        if (rows == 0) return;
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.RmsnormWeightGrad, BasicOps.WorkgroupSize);
        var (dwRange, dwOffset) = OpChecks.Whole(dw);
        var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(dim));
        foreach (var piece in Pieces.Split(rows, [x, dy, rstd], [dim, dim, 1]))
        {
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Read(piece.Ranges[2]), Binding.ReadWrite(dwRange)],
                new WeightGradPush
                {
                    Rows = (uint)piece.Count, Dim = (uint)dim, GroupsX = gx,
                    XOffset = piece.Offsets[0], DyOffset = piece.Offsets[1], RstdOffset = piece.Offsets[2], DwOffset = dwOffset,
                }, gx, gy, 1, "rmsnorm_weight_grad");
        }
    }

    private static (long Rows, long Dim) Check(DeviceTensor x, DeviceTensor w, DeviceTensor other, DeviceTensor? rstd)
    {
        BasicOps.RequireF32(x, w, other);
        long dim = w.Count;
        if (dim == 0 || x.Count % dim != 0 || x.Shape.Length == 0 || x.Shape[^1] != dim)
            throw new ArgumentException($"rmsnorm: '{x.Name}' {x.ShapeString} does not end in the weight's length {dim}");
        OpChecks.RequireSameCount(x, other, "rmsnorm");
        long rows = x.Count / dim;
        if (rstd is not null)
        {
            BasicOps.RequireF32(rstd);
            OpChecks.RequireCount(rstd, rows, "rmsnorm rstd");
        }
        return (rows, dim);
    }
}
