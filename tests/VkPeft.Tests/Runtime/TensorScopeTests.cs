// TensorScope: what a constructor allocated is freed when it fails before handing the tensors over, and kept when it
// does hand them over.
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class TensorScopeTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private sealed class TwoTensors
    {
        public TwoTensors(VulkanContext ctx, bool failAfterFirst)
        {
            using var scope = new TensorScope();
            A = scope.Add(DeviceTensor.Create(ctx, "scope.a", DType.F32, [100], MemoryCategory.Workspace));
            if (failAfterFirst) throw new InvalidOperationException("constructor failed");
            B = scope.Add(DeviceTensor.Create(ctx, "scope.b", DType.F32, [50], MemoryCategory.Workspace));
            Owned = scope.Keep();
        }

        public DeviceTensor A { get; }
        public DeviceTensor? B { get; }
        public IReadOnlyList<IDisposable> Owned { get; } = [];
    }

    [Fact]
    public void AFailingConstructorFreesWhatItAllocated()
    {
        var acc = Ctx.Arena.Accounting;
        long before = acc.Current(MemoryCategory.Workspace);
        Assert.Throws<InvalidOperationException>(() => new TwoTensors(Ctx, failAfterFirst: true));
        Assert.Equal(before, acc.Current(MemoryCategory.Workspace));
    }

    [Fact]
    public void KeptTensorsOutliveTheScopeUntilTheOwnerDisposesThem()
    {
        var acc = Ctx.Arena.Accounting;
        long before = acc.Current(MemoryCategory.Workspace);
        var t = new TwoTensors(Ctx, failAfterFirst: false);
        Assert.Equal(before + 600, acc.Current(MemoryCategory.Workspace));   // 150 fp32 values
        Assert.Equal(2, t.Owned.Count);
        t.B!.Upload<float>([.. Enumerable.Range(0, 50).Select(i => (float)i)]);
        Assert.Equal(49f, t.B.ToArray<float>()[49]);
        foreach (var d in t.Owned) d.Dispose();
        Assert.Equal(before, acc.Current(MemoryCategory.Workspace));
    }

    [Fact]
    public void KeepingTwiceOrAddingAfterKeepIsAnError()
    {
        using var scope = new TensorScope();
        scope.Keep();
        Assert.Throws<InvalidOperationException>(() => scope.Keep());
        using var t = DeviceTensor.Create(Ctx, "scope.late", DType.F32, [4], MemoryCategory.Workspace);
        Assert.Throws<InvalidOperationException>(() => scope.Add(t));
    }
}
