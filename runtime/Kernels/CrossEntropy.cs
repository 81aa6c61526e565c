// Cross-entropy over the vocabulary for a chunk of rows: per-row loss and, in the same pass, dlogits written over the logits.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

public static class CrossEntropy
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint Rows, Cols, GroupsX;
        public float Scale;
        public uint WriteGrad, ZOffset, TOffset, LossOffset;
    }

    /// <summary>
    /// loss[r] = logsumexp(logits[r, :]) − logits[r, targets[r]] (logits [rows, V] F32, targets [rows] I32, loss [rows] F32);
    /// a negative target masks the row (loss 0), a target ≥ V yields NaN. Writes loss; logits are only read.
    /// </summary>
    public static void Loss(DeviceTensor logits, DeviceTensor targets, DeviceTensor loss) => Run(logits, targets, loss, 0, false);

    /// <summary>
    /// As <see cref="Loss"/>, and overwrites logits in place with dlogits = (softmax(logits) − onehot(target))·scale
    /// (zeros on masked rows). scale is typically 1 / (unmasked tokens in the whole batch).
    /// </summary>
    public static void LossAndGradient(DeviceTensor logits, DeviceTensor targets, DeviceTensor loss, float scale) => Run(logits, targets, loss, scale, true);

    private static void Run(DeviceTensor logits, DeviceTensor targets, DeviceTensor loss, float scale, bool grad)
    {
        BasicOps.RequireF32(logits, loss);
        OpChecks.RequireI32(targets);
        long cols = logits.Shape.Length == 0 ? 1 : logits.Shape[^1];
        long rows = cols == 0 ? 0 : logits.Count / cols;
        OpChecks.RequireCount(targets, rows, "cross-entropy targets");
        OpChecks.RequireCount(loss, rows, "cross-entropy loss");
        if (rows == 0) return;
        if (cols == 0 || cols > int.MaxValue) throw new ArgumentException($"cross-entropy: vocabulary of {cols} is not supported");
        var ctx = logits.Context;
        var p = ctx.Pipelines.Get(ctx.Caps.SubgroupArithmetic ? ShaderId.CrossEntropySubgroup : ShaderId.CrossEntropy, BasicOps.WorkgroupSize);
        foreach (var piece in Pieces.Split(rows, [logits, targets, loss], [cols, 1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, piece.Count);
            ctx.Commands.Dispatch(p,
                [grad ? Binding.ReadWrite(piece.Ranges[0]) : Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Write(piece.Ranges[2])],
                new Push
                {
                    Rows = (uint)piece.Count, Cols = (uint)cols, GroupsX = gx, Scale = scale, WriteGrad = grad ? 1u : 0u,
                    ZOffset = piece.Offsets[0], TOffset = piece.Offsets[1], LossOffset = piece.Offsets[2],
                }, gx, gy, 1, grad ? "cross_entropy_grad" : "cross_entropy");
        }
    }
}
