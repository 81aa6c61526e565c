// Device selection, capabilities, memory accounting and budget, ownership/leaks, dispatch checks and validation capture.
using Silk.NET.Vulkan;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class RuntimeCoreTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    [Fact]
    public void CapabilitiesDescribeTheDevice()
    {
        var c = Ctx.Caps;
        Assert.False(string.IsNullOrEmpty(c.Name));
        Assert.True(c.MaxStorageBufferRange >= 1 << 27, "Vulkan guarantees at least 2^27 bytes of storage range");
        Assert.True(c.MaxComputeWorkGroupInvocations >= 128);
        Assert.True(c.SubgroupSize >= 1);
        Assert.NotEmpty(c.Heaps);
        Assert.True(Ctx.ValidationEnabled, "tests run with the Khronos validation layer");
    }

    [Fact]
    public void DeviceChoicePrefersDiscreteAndHonoursSelectors()
    {
        PhysicalDeviceSummary[] devices =
        [
            new(0, "llvmpipe", DeviceKind.Cpu, "1.3"),
            new(1, "Integrated X", DeviceKind.IntegratedGpu, "1.3"),
            new(2, "Discrete Y", DeviceKind.DiscreteGpu, "1.3"),
        ];
        Assert.Equal(2, VulkanContext.ChooseDevice(devices, null));
        Assert.Equal(0, VulkanContext.ChooseDevice(devices, "0"));
        Assert.Equal(1, VulkanContext.ChooseDevice(devices, "integrated"));
        var e = Assert.Throws<VulkanUnsupportedException>(() => VulkanContext.ChooseDevice(devices, "radeon"));
        Assert.Contains("radeon", e.Message);
        Assert.Throws<VulkanUnsupportedException>(() => VulkanContext.ChooseDevice(devices, "7"));
    }

    [Fact]
    public void AccountingTracksCategoriesAndPeaks()
    {
        var acc = Ctx.Arena.Accounting;
        long before = acc.Current(MemoryCategory.Optimizer);
        using (var t = DeviceTensor.Create(Ctx, "opt", DType.F32, [1000], MemoryCategory.Optimizer))
        {
            Assert.Equal(before + 4000, acc.Current(MemoryCategory.Optimizer));
            Assert.True(acc.Peak(MemoryCategory.Optimizer) >= before + 4000);
        }
        Assert.Equal(before, acc.Current(MemoryCategory.Optimizer));
    }

    [Fact]
    public void BudgetOverrunNamesRequestCategoriesAndLimit()
    {
        using var ctx = new VulkanContext(GpuFixture.Options() with { MemoryBudget = 1 << 20, ArenaBlockSize = 256 << 10 });
        using var keep = DeviceTensor.Create(ctx, "weights.q", DType.F32, [100_000], MemoryCategory.Weights);
        var e = Assert.Throws<DeviceMemoryBudgetException>(() => DeviceTensor.Create(ctx, "activations.big", DType.F32, [300_000], MemoryCategory.Activations));
        Assert.Contains("activations.big", e.Message);
        Assert.Contains("weights", e.Message);
        Assert.Contains("1.00 MiB", e.Message);
    }

    [Fact]
    public void ContextsAndTensorsDoNotLeak()
    {
        for (int round = 0; round < 3; round++)
        {
            var ctx = new VulkanContext(GpuFixture.Options());
            var tensors = new List<DeviceTensor>();
            for (int i = 0; i < 200; i++) tensors.Add(DeviceTensor.Create(ctx, $"t{i}", DType.F32, [1 + i * 37], MemoryCategory.Activations));
            for (int i = 0; i < 100; i++) tensors[i].Dispose();
            tensors[5].Dispose(); // idempotent
            BasicOps.Fill(tensors[150], 1f);
            ctx.Sync();
            long expectedLive = Enumerable.Range(100, 100).Sum(i => (long)(1 + i * 37) * 4);
            Assert.Equal(expectedLive, ctx.Arena.Accounting.Current(MemoryCategory.Activations));
            ctx.Dispose();                 // frees the 100 still alive
            ctx.Dispose();                 // idempotent
            Assert.True(tensors[199].IsDisposed);
        }
        // Freed blocks are returned to the driver: a context with everything released holds no blocks.
        using var c2 = new VulkanContext(GpuFixture.Options());
        using (DeviceTensor.Create(c2, "x", DType.F32, [10], MemoryCategory.Workspace)) { }
        Assert.Equal(0, c2.Arena.BlockCount);
        Assert.Equal(0, c2.Arena.Accounting.ReservedBytes);
    }

    [Fact]
    public void DispatchChecksBindingsPushSizeAndGroupCounts()
    {
        var p = Ctx.Pipelines.Get(ShaderId.Fill, 256);
        Assert.Equal(1, p.BindingCount);
        Assert.Equal(16u, p.PushConstantSize);
        using var t = DeviceTensor.Create(Ctx, "t", DType.F32, [16], MemoryCategory.Workspace);
        Assert.Throws<ArgumentException>(() => Ctx.Commands.Dispatch(p, [], new byte[16], 1));
        Assert.Throws<ArgumentException>(() => Ctx.Commands.Dispatch(p, [Binding.Write(t.Range)], new byte[8], 1));
        Assert.Throws<ArgumentException>(() => Ctx.Commands.Dispatch(p, [Binding.Write(t.Range)], new byte[16], Ctx.Caps.MaxComputeWorkGroupCount[0] + 1));
        Ctx.Sync();
    }

    [Fact]
    public void EveryShaderVariantBuildsAPipelineWithASmallPushBlock()
    {
        foreach (var info in ShaderCatalog.All)
        {
            var spirv = ShaderCatalog.LoadSpirv(info.Id);
            // Cooperative-matrix variants need VK_NV_cooperative_matrix (spirv-val checked them in the build; the
            // KernelPathsTests and AttentionCoopMatrixTests cover their selection); every other variant must build here.
            if (info.Has("COOPMAT") && info.Source switch
                {
                    "matmul.comp" => QuantizedMatMul.CoopMatrixUnavailable(Ctx.Caps),
                    "bench_fma.comp" => KernelPaths.NvCooperativeMatrixUnavailable(Ctx.Caps, 0, 256),
                    _ => VkPeft.Runtime.Kernels.Attention.CoopMatrixUnavailable(Ctx.Caps),
                } != null)
                continue;
            var r = SpirvReflection.Reflect(spirv);
            Assert.True(r.PushConstantSize <= ComputePipelineCache.PushBlockSize, $"{info.Name}: {r.PushConstantSize}-byte push block");
            Assert.True(r.BindingCount <= ComputePipelineCache.MaxBindings);
            Assert.Equal(64, info.Sha256.Length);
            var p = Ctx.Pipelines.Get(info.Id, 256);
            Assert.Equal(r.BindingCount, p.BindingCount);
        }
        Ctx.Sync();
    }

    [Fact]
    public unsafe void ValidationMessagesAreCaughtAndFail()
    {
        using var ctx = new VulkanContext(GpuFixture.Options());
        // A zero-sized buffer violates VUID-VkBufferCreateInfo-size-00912: the layer must report it.
        var info = new BufferCreateInfo { SType = StructureType.BufferCreateInfo, Size = 0, Usage = BufferUsageFlags.StorageBufferBit };
        Silk.NET.Vulkan.Buffer b;
        ctx.Vk.CreateBuffer(ctx.Device, &info, null, &b);
        var e = Assert.Throws<ValidationFailedException>(() => ctx.Sync());
        Assert.Contains("00912", e.Message);
        if (b.Handle != 0) ctx.Vk.DestroyBuffer(ctx.Device, b, null);
    }

    [Fact]
    public void ProfilingRecordsPerKernelTimes()
    {
        using var ctx = new VulkanContext(GpuFixture.Options() with { Profile = true });
        Assert.True(ctx.Caps.TimestampsSupported, "lavapipe and every desktop driver support compute timestamps");
        using var t = DeviceTensor.Create(ctx, "t", DType.F32, [4096], MemoryCategory.Workspace);
        for (int i = 0; i < 5; i++) BasicOps.Fill(t, i);
        ctx.Sync();
        Assert.True(ctx.Commands.Profile.Entries.TryGetValue("fill", out var e));
        Assert.Equal(5, e.Count);
        Assert.Contains("fill", ctx.Commands.Profile.Format());
        Assert.Equal(1, ctx.Commands.TotalSubmits);
    }
}
