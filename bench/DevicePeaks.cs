// Measures this device's own fp32 FMA throughput, copy bandwidth and, where it offers VK_NV_cooperative_matrix, the
// throughput of 16x16x16 fp16 x fp16 -> fp32 cooperative-matrix products, with microbenchmark shaders.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

/// <summary>Peaks: fp32 FMA GFLOP/s, copy GB/s, and NV cooperative-matrix GFLOP/s (null where the device has none).</summary>
public sealed record DevicePeak(double FmaGflops, double CopyGBps, double? CoopMatrixGflops = null);

public static class DevicePeaks
{
    [StructLayout(LayoutKind.Sequential)]
    private struct FmaPush { public uint Iterations, GroupsX; public float Seed; }

    public static DevicePeak Measure(VulkanContext ctx, bool quick)
    {
        // FMA: enough invocations to fill every core/SM many times over; 128 FLOP per invocation per iteration.
        bool cpu = ctx.Caps.Kind == DeviceKind.Cpu;
        long invocations = cpu ? 64 * 1024 : 4 * 1024 * 1024;
        uint iterations = (uint)(cpu ? (quick ? 256 : 1024) : 4096);
        using var outT = DeviceTensor.Create(ctx, "bench.fma.out", DType.F32, [invocations], MemoryCategory.Workspace);
        var fma = ctx.Pipelines.Get(ShaderId.BenchFma, 256);
        var (gx, gy) = Pieces.Grid(invocations / 256, ctx.Caps.MaxComputeWorkGroupCount[0]);
        double fmaSeconds = GpuTimer.MedianSeconds(ctx, () =>
            ctx.Commands.Dispatch(fma, [Binding.Write(outT.Range)], new FmaPush { Iterations = iterations, GroupsX = gx, Seed = 1f }, gx, gy), quick ? 3 : 5);
        double flops = invocations * (double)iterations * 128;

        // Copy: read + write of a buffer far larger than any cache.
        long elems = (cpu ? 64L : 256L) << 20 >> 2;
        elems = Math.Min(elems, (long)(ctx.Caps.MaxBindingBytes / 4));
        using var src = DeviceTensor.Create(ctx, "bench.copy.src", DType.F32, [elems], MemoryCategory.Workspace);
        using var dst = DeviceTensor.Create(ctx, "bench.copy.dst", DType.F32, [elems], MemoryCategory.Workspace);
        BasicOps.Fill(src, 1f);
        double copySeconds = GpuTimer.MedianSeconds(ctx, () => BasicOps.Copy(src, dst), quick ? 3 : 7);
        double bytes = 2.0 * elems * 4;
        return new DevicePeak(flops / fmaSeconds / 1e9, bytes / copySeconds / 1e9, CoopMatrixGflops(ctx, quick));
    }

    /// <summary>
    /// bench_fma_coopmat: 4,096 subgroups of 32 (eight per 256-invocation workgroup) each running 8,192 rounds of four
    /// 16x16x16 multiply-adds (32,768 FLOP per round), 1.1 TFLOP in all; null where the device cannot run it.
    /// </summary>
    private static double? CoopMatrixGflops(VulkanContext ctx, bool quick)
    {
        if (KernelPaths.NvCooperativeMatrixUnavailable(ctx.Caps, 0, 256) != null) return null;
        const long subgroups = 4096;
        const uint iterations = 8192, perGroup = 256 / 32;
        using var outT = DeviceTensor.Create(ctx, "bench.coopmat.out", DType.F32, [subgroups * 1024], MemoryCategory.Workspace);
        var pipeline = ctx.Pipelines.Get(ShaderId.BenchFmaCoopmat, 256);
        uint groups = (uint)(subgroups / perGroup);
        double seconds = GpuTimer.MedianSeconds(ctx, () =>
            ctx.Commands.Dispatch(pipeline, [Binding.Write(outT.Range)], new FmaPush { Iterations = iterations, GroupsX = groups, Seed = 1f }, groups), quick ? 3 : 5);
        return subgroups * (double)iterations * 32768 / seconds / 1e9;
    }
}
