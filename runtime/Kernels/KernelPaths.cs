// Kernel-path selection with a first-use self-check, one mechanism for every fast variant: a fast kernel is used on a
// device only when the device can run it, the fp32 reference paths are not forced (--kernels safe), and, the first time
// it is asked for, it agreed with its reference kernel on small awkward shapes. A mismatch switches it off for this
// device with one warning line; work continues on the reference path.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// A fast kernel variant and how to check it. <paramref name="Unavailable"/> says why a device cannot run it (null when
/// it can); <paramref name="SelfCheck"/> runs the fast and the reference kernel on small awkward shapes and returns null
/// when they agree within the stated bound, else the first mismatch.
/// </summary>
public sealed record FastKernel(string Op, string Fast, string Reference,
    Func<DeviceCapabilities, string?> Unavailable, Func<VulkanContext, string?> SelfCheck);

/// <summary>
/// Which path an op uses on this device, and why; <paramref name="Reason"/> when the why names a setting (safe kernels),
/// for front ends to spell it their way (<see cref="Explain"/>).
/// </summary>
public sealed record KernelPathChoice(string Op, string Path, string Why, SettingMessage? Reason = null)
{
    /// <summary>The why, with any setting it names spelled by <paramref name="spell"/>.</summary>
    public string Explain(Func<Setting, string>? spell) => spell != null && Reason != null ? Reason.Render(spell) : Why;
}

public sealed class KernelPaths(VulkanContext ctx, bool safe, Action<string> warn)
{
    private readonly Dictionary<FastKernel, KernelPathChoice> _decided = [];
    private readonly Dictionary<FastKernel, bool> _use = [];

    /// <summary>True when safe kernels (<see cref="RuntimeOptions.SafeKernels"/>) force the fp32 reference paths.</summary>
    public bool Safe => safe;

    /// <summary>Whether <paramref name="kernel"/> may run on this device (self-checking it on first use).</summary>
    public bool Use(FastKernel kernel)
    {
        lock (_decided)
        {
            if (_use.TryGetValue(kernel, out var use)) return use;
            SettingMessage? reason = safe ? SafeReason : null;
            var why = reason?.ToString() ?? kernel.Unavailable(ctx.Caps);
            if (why == null)
            {
                string? mismatch;
                try { mismatch = kernel.SelfCheck(ctx); }
                catch (Exception e) when (e is not OutOfMemoryException) { mismatch = e.Message; }
                if (mismatch != null)
                {
                    why = $"self-check against {kernel.Reference} failed: {mismatch}";
                    warn($"{kernel.Op}: {kernel.Fast} disagrees with {kernel.Reference} on this device ({mismatch}); using {kernel.Reference}");
                }
            }
            use = why == null;
            _use[kernel] = use;
            _decided[kernel] = new KernelPathChoice(kernel.Op, use ? kernel.Fast : kernel.Reference,
                use ? $"the device offers it and it matched {kernel.Reference} on first use" : why!, reason);
            return use;
        }
    }

    /// <summary>
    /// Why this device cannot run a VK_NV_cooperative_matrix variant (the fused 4-bit GEMM's, flash attention's): they
    /// use 16x16x16 fp16 x fp16 -> fp32 subgroup matrices laid out for 32-wide subgroups, shaderFloat16, and need
    /// <paramref name="sharedBytes"/> of shared memory and <paramref name="invocations"/> per workgroup. Null when it can.
    /// </summary>
    public static string? NvCooperativeMatrixUnavailable(DeviceCapabilities caps, uint sharedBytes, uint invocations)
    {
        ArgumentNullException.ThrowIfNull(caps);
        if (caps.CooperativeMatricesNV.Length == 0) return "the device does not offer VK_NV_cooperative_matrix";
        if (!caps.CooperativeMatricesNV.Any(s => s is { M: 16, N: 16, K: 16 } && s.AType.StartsWith("Float16", StringComparison.Ordinal)
                && s.BType.StartsWith("Float16", StringComparison.Ordinal) && s.CType.StartsWith("Float32", StringComparison.Ordinal)
                && s.DType.StartsWith("Float32", StringComparison.Ordinal) && s.Scope.StartsWith("Subgroup", StringComparison.Ordinal)))
            return "the device lists no 16x16x16 fp16 x fp16 -> fp32 subgroup cooperative matrix";
        if (caps.SubgroupSize != 32) return $"the cooperative-matrix variants are laid out for 32-wide subgroups, the device has {caps.SubgroupSize}";
        if (!caps.ShaderFloat16) return "the device lacks shaderFloat16";
        if (sharedBytes > caps.MaxComputeSharedMemorySize || invocations > caps.MaxComputeWorkGroupInvocations || invocations > caps.MaxComputeWorkGroupSize[0])
            return $"the cooperative-matrix variant needs {sharedBytes} bytes of shared memory and {invocations}-invocation workgroups; "
                + $"the device allows {caps.MaxComputeSharedMemorySize} bytes and {caps.MaxComputeWorkGroupInvocations} invocations";
        return null;
    }

    /// <summary>Why every fast variant is off when safe kernels are asked for.</summary>
    public static readonly SettingMessage SafeReason = new($"{RuntimeSettings.SafeKernels} forces the fp32 reference");

    /// <summary>The decision for <paramref name="kernel"/> (deciding it now, self-check included, if not yet made).</summary>
    public KernelPathChoice Describe(FastKernel kernel)
    {
        Use(kernel);
        lock (_decided) return _decided[kernel];
    }
}
