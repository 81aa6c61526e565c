// The staging ring on a device treated as having no host-mapped device memory (as a discrete GPU): small uploads are
// recorded without host waits and stay ordered with the work around them, the ring waits only when it wraps onto
// slots still in flight, large and boundary-sized transfers round-trip exactly, and the staging memory is the ring's.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

public sealed class StagingRingTests
{
    private static VulkanContext StagedContext(bool ring = true) =>
        new(GpuFixture.Options() with { DisableHostMappedMemory = true, StagingRing = ring });

    [Fact]
    public void SmallUploadsAreOrderedWithTheWorkAroundThemAndWaitOnlyWhenTheRingWraps()
    {
        using var ctx = StagedContext();
        Assert.False(ctx.Caps.UnifiedMemory);
        const int n = 1003, uploads = 300;   // 4,012-byte uploads: 1.15 MiB in all, so the 1 MiB ring wraps once
        using var x = DeviceTensor.Create(ctx, "x", DType.F32, [n], MemoryCategory.Workspace);
        using var acc = DeviceTensor.Create(ctx, "acc", DType.F32, [n], MemoryCategory.Workspace);
        Assert.Equal(0, x.Range.Mapped);
        BasicOps.Fill(acc, 0);
        ctx.Sync();
        long waitsBefore = ctx.Commands.TotalWaits;
        var expected = new float[n];
        for (int i = 0; i < uploads; i++)
        {
            // The same tensor is overwritten each time: an upload that ran before the previous add read x, or a ring
            // slot reused before its copy ran, changes the sum.
            var values = TestData.Uniform(n, i);
            x.Upload<float>(values);
            BasicOps.Add(acc, x, acc);
            for (int j = 0; j < n; j++) expected[j] += values[j];
        }
        Assert.Equal(expected, acc.ToArray<float>());
        long waits = ctx.Commands.TotalWaits - waitsBefore;
        long wraps = (long)uploads * n * 4 / (long)Transfers.RingBytes;
        Assert.Equal(wraps, Transfers.RingWaits(ctx));
        Assert.Equal(wraps + 1, waits);   // the wraps and the final download; 2 per upload before the ring
        Assert.Equal((long)Transfers.RingBytes, ctx.Arena.Accounting.Current(MemoryCategory.Staging));
    }

    [Theory]
    [InlineData(1UL)]
    [InlineData(Transfers.RingTransferBytes / 4)]          // the largest ring transfer
    [InlineData(Transfers.RingTransferBytes / 4 + 1)]      // the smallest with a staging buffer of its own
    [InlineData(9_000_001UL)]                                // 36 MB: two 32 MiB chunks
    public void TransfersOfEverySizeRoundTripExactly(ulong count)
    {
        using var ctx = StagedContext();
        using var t = DeviceTensor.Create(ctx, "t", DType.F32, [(long)count], MemoryCategory.Workspace);
        var values = TestData.Uniform((int)count, 7);
        t.Upload<float>(values);
        Assert.Equal(values, t.ToArray<float>());
        // Only the ring stays allocated once the transfer is done (none when the ring was never needed).
        long staging = ctx.Arena.Accounting.Current(MemoryCategory.Staging);
        Assert.Equal(count * 4 <= Transfers.RingTransferBytes ? (long)Transfers.RingBytes : 0, staging);
    }

    [Fact]
    public void WithoutTheRingEveryUploadWaitsTwice()
    {
        // The comparison the benchmarks make: the old path syncs before and after each staged upload.
        using var ctx = StagedContext(ring: false);
        using var x = DeviceTensor.Create(ctx, "x", DType.F32, [64], MemoryCategory.Workspace);
        using var acc = DeviceTensor.Create(ctx, "acc", DType.F32, [64], MemoryCategory.Workspace);
        BasicOps.Fill(acc, 0);
        ctx.Sync();
        long before = ctx.Commands.TotalWaits;
        for (int i = 0; i < 5; i++)
        {
            x.Upload<float>(TestData.Uniform(64, i));
            BasicOps.Add(acc, x, acc);
        }
        Assert.Equal(2 * 5 - 1, ctx.Commands.TotalWaits - before);   // the first upload finds nothing in flight
    }
}
