// One AdamW optimizer step on flat fp32 tensors, following torch.optim.AdamW's single-tensor update step by step.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>AdamW hyper-parameters; the defaults are PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01).</summary>
public readonly record struct AdamWSettings(double Lr = 1e-3, double Beta1 = 0.9, double Beta2 = 0.999, double Eps = 1e-8, double WeightDecay = 0.01);

public static class AdamW
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint Count, GroupsX;
        public float DecayFactor, OneMinusBeta1, Beta2, OneMinusBeta2, Eps, NegStepSize, Bc2Sqrt, GradScale;
        public uint POffset, GOffset, MOffset, VOffset;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ClipPush
    {
        public Push Step;
        public uint StatusOffset, StatusCount;
        public float Clip;
    }

    /// <summary>
    /// Step number <paramref name="step"/> (1 for the first) of torch.optim.AdamW (amsgrad off, not maximizing):
    /// g = grad·gradScale; p ← p·(1 − lr·wd); m ← m + (1 − β1)·(g − m); v ← β2·v + (1 − β2)·g²;
    /// p ← p − (lr / (1 − β1^step)) · m / (sqrt(v) / sqrt(1 − β2^step) + eps).
    /// The scalar factors are formed in float64 on the host (as PyTorch does in Python) and rounded to fp32.
    /// Updates param, m, v in place (all the same element count as grad); grad is only read. gradScale folds in
    /// global-norm clipping (clip_grad_norm_'s coefficient).
    /// </summary>
    public static void Step(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, long step, AdamWSettings s, float gradScale = 1)
    {
        Dispatch(param, grad, m, v, step, s, gradScale, null);
    }

    /// <summary>
    /// <see cref="Step"/> with global-norm clipping decided on the device, so no host read sits between the gradient norm
    /// and the update. <paramref name="status"/> (F32, one segment) holds at <paramref name="statusOffset"/> the step's
    /// Σ grad² followed by its loss sums (<paramref name="statusCount"/> values in all). The gradient is scaled by
    /// clip / ‖grad‖ (fp32 on the device) when ‖grad‖ &gt; <paramref name="clip"/> &gt; 0; when any status value is not
    /// finite nothing is updated, so a poisoned step leaves parameters and moments as they were.
    /// </summary>
    public static void StepWithDeviceClip(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, long step, AdamWSettings s, float clip,
        DeviceTensor status, long statusOffset, int statusCount)
    {
        BasicOps.RequireF32(status);
        if (status.Segments.Count != 1) throw new ArgumentException($"'{status.Name}' must be one bindable range");
        if (statusCount < 1 || statusOffset < 0 || statusOffset + statusCount > status.Count)
            throw new ArgumentOutOfRangeException(nameof(statusOffset), $"status row {statusOffset}+{statusCount} outside '{status.Name}' [{status.Count}]");
        if (!(clip >= 0)) throw new ArgumentOutOfRangeException(nameof(clip), "clip must be ≥ 0 (0 = off)");
        Dispatch(param, grad, m, v, step, s, 1, (status, (uint)statusOffset, (uint)statusCount, clip));
    }

    private static void Dispatch(DeviceTensor param, DeviceTensor grad, DeviceTensor m, DeviceTensor v, long step, AdamWSettings s, float gradScale,
        (DeviceTensor Tensor, uint Offset, uint Count, float Clip)? status)
    {
        BasicOps.RequireF32(param, grad, m, v);
        foreach (var t in new[] { grad, m, v }) OpChecks.RequireSameCount(param, t, "adamw");
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), "AdamW steps count from 1");
        var ctx = param.Context;
        var p = ctx.Pipelines.Get(status == null ? ShaderId.Adamw : ShaderId.AdamwDeviceClip, BasicOps.WorkgroupSize);
        var (decay, omb1, b2, omb2, eps, negStep, bc2Sqrt) = Scalars(step, s);
        foreach (var piece in Pieces.Split(param.Count, [param, grad, m, v], [1, 1, 1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            var push = new Push
            {
                Count = (uint)piece.Count, GroupsX = gx,
                DecayFactor = decay, OneMinusBeta1 = omb1, Beta2 = b2, OneMinusBeta2 = omb2, Eps = eps,
                NegStepSize = negStep, Bc2Sqrt = bc2Sqrt, GradScale = gradScale,
                POffset = piece.Offsets[0], GOffset = piece.Offsets[1], MOffset = piece.Offsets[2], VOffset = piece.Offsets[3],
            };
            Binding[] bindings = [Binding.ReadWrite(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.ReadWrite(piece.Ranges[2]), Binding.ReadWrite(piece.Ranges[3])];
            if (status is { } st)
                ctx.Commands.Dispatch(p, [.. bindings, Binding.Read(st.Tensor.Range)],
                    new ClipPush { Step = push, StatusOffset = st.Offset, StatusCount = st.Count, Clip = st.Clip }, gx, gy, 1, "adamw");
            else
                ctx.Commands.Dispatch(p, bindings, push, gx, gy, 1, "adamw");
        }
    }

    /// <summary>The fp32 scalars the shader receives: 1 − lr·wd, 1 − β1, β2, 1 − β2, eps, −lr/(1 − β1^step), sqrt(1 − β2^step).</summary>
    public static (float Decay, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float Eps, float NegStepSize, float Bc2Sqrt) Scalars(long step, AdamWSettings s) =>
        ((float)(1 - s.Lr * s.WeightDecay), (float)(1 - s.Beta1), (float)s.Beta2, (float)(1 - s.Beta2), (float)s.Eps,
         (float)(-s.Lr / (1 - Math.Pow(s.Beta1, step))), (float)Math.Sqrt(1 - Math.Pow(s.Beta2, step)));
}
