// Measures this device's own fp32 FMA throughput and copy bandwidth with microbenchmark shaders.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public sealed record DevicePeak(double FmaGflops, double CopyGBps);

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
        return new DevicePeak(flops / fmaSeconds / 1e9, bytes / copySeconds / 1e9);
    }
}
