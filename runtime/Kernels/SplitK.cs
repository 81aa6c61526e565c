// Split-K for skinny products — LoRA at rank 4-64: x·Aᵀ and dy·B (N = rank) and the MatMulTn weight gradients dA and dB
// (a rank-sized side of the output, summed over the tokens). Their outputs alone give a GPU a few dozen workgroups; cut
// along K into S slices, each slice's partial product goes to its own part of a per-device scratch buffer and one
// splitk_sum pass adds the partials in slice order. No float atomics: the result is the same bit for bit on every run.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class SplitK
{
    /// <summary>Workgroups a skinny product should launch (a few per compute unit of a large GPU).</summary>
    public const long TargetWorkgroups = 512;
    /// <summary>At most this many slices; each slice sums at least <see cref="MinSliceK"/> products.</summary>
    public const int MaxSplits = 16;
    public const long MinSliceK = 256;
    /// <summary>Largest total of the partials (floats) <see cref="Choose"/> allows: 8 MiB.</summary>
    public const long ScratchFloats = 2L << 20;
    /// <summary>
    /// Floats of the per-device scratch, one fixed size: <see cref="ScratchFloats"/> plus each partial's rounding up to
    /// the storage-buffer offset alignment (at most 256 bytes by the Vulkan spec, 64 floats, for up to <see cref="MaxSplits"/> partials).
    /// </summary>
    public const long ScratchCapacityFloats = ScratchFloats + MaxSplits * 64L;
    /// <summary>Device bytes of the scratch (the memory model's "split-K partials", Workspace).</summary>
    public const long ScratchBytes = ScratchCapacityFloats * 4;

    [StructLayout(LayoutKind.Sequential)]
    private struct SumPush { public uint Count, GroupsX, Splits, PStride, POffset, COffset; public float Alpha, Beta; }

    private static readonly ConditionalWeakTable<VulkanContext, DeviceTensor> Scratches = new();

    /// <summary>
    /// Slices for a product whose output launches <paramref name="outputWorkgroups"/> workgroups, sums <paramref name="k"/>
    /// products per output and has <paramref name="outputs"/> outputs: enough to reach <see cref="TargetWorkgroups"/>,
    /// within the slice, count and scratch limits; 1 (no split) when the output alone fills the device.
    /// </summary>
    public static int Choose(long outputWorkgroups, long k, long outputs)
    {
        if (outputWorkgroups >= TargetWorkgroups || outputs <= 0) return 1;
        long s = Math.Min((TargetWorkgroups + outputWorkgroups - 1) / outputWorkgroups, k / MinSliceK);
        s = Math.Min(Math.Min(s, MaxSplits), ScratchFloats / outputs);
        return s < 2 ? 1 : (int)s;
    }

    /// <summary>Elements from one partial to the next: the output count rounded up so that each partial binds aligned.</summary>
    public static long PartialStride(VulkanContext ctx, long outputs)
    {
        long align = Math.Max(1, (long)ctx.Caps.MinStorageBufferOffsetAlignment / 4);
        return (outputs + align - 1) / align * align;
    }

    /// <summary>The scratch range of partial <paramref name="index"/> of <paramref name="splits"/> (each <paramref name="stride"/> floats).</summary>
    internal static BufferRange Partial(VulkanContext ctx, int splits, long stride, int index)
    {
        var scratch = Scratch(ctx, splits * stride);
        return scratch.Range.Slice((ulong)(index * stride * 4), (ulong)(stride * 4));
    }

    /// <summary>C[i] = alpha·Σ_s partial_s[i] + beta·C[i] for i &lt; count, over C's binding from element <paramref name="cOffset"/>.</summary>
    internal static void Sum(VulkanContext ctx, int splits, long stride, long count, BufferRange c, uint cOffset, float alpha, float beta)
    {
        var scratch = Scratch(ctx, splits * stride);
        var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(count));
        var push = new SumPush { Count = (uint)count, GroupsX = gx, Splits = (uint)splits, PStride = (uint)stride, POffset = 0, COffset = cOffset, Alpha = alpha, Beta = beta };
        ctx.Commands.Dispatch(ctx.Pipelines.Get(ShaderId.SplitkSum, BasicOps.WorkgroupSize),
            [Binding.Read(scratch.Range.Slice(0, (ulong)(splits * stride * 4))), beta != 0 ? Binding.ReadWrite(c) : Binding.Write(c)],
            push, gx, gy, 1, "splitk_sum");
    }

    /// <summary>
    /// Allocates the device's scratch now (<see cref="ScratchBytes"/>, Workspace), so that a training step's peak does
    /// not depend on which of its products split: TrainStep reserves it on devices that run the shared-tiles matmuls.
    /// </summary>
    public static void Reserve(VulkanContext ctx) => Scratch(ctx, ScratchCapacityFloats);

    /// <summary>
    /// The device's scratch: <see cref="ScratchCapacityFloats"/> from its first use, which holds every split
    /// <see cref="Choose"/> picks; only an explicit larger split count grows it (to exactly <paramref name="floats"/>).
    /// </summary>
    private static DeviceTensor Scratch(VulkanContext ctx, long floats)
    {
        lock (Scratches)
        {
            if (Scratches.TryGetValue(ctx, out var t) && !t.IsDisposed && t.Count >= floats) return t;
            t?.Dispose();
            t = DeviceTensor.Create(ctx, "splitk.partials", DType.F32, [Math.Max(floats, ScratchCapacityFloats)], MemoryCategory.Workspace);
            Scratches.AddOrUpdate(ctx, t);
            return t;
        }
    }
}
