// Base for tests that need tensors split across bindings: a context with 64 KiB bindings and 96 KiB allocations.
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Tests.Support;

public abstract class SplitDeviceTests : IDisposable
{
    public const int BindingBytes = 64 << 10;

    /// <summary>Validation on, 64 KiB bindings, 96 KiB allocations and blocks: anything over 64 KiB spans segments.</summary>
    public static RuntimeOptions SplitOptions() => GpuFixture.Options() with
    {
        MaxStorageBufferRange = BindingBytes,
        MaxMemoryAllocationSize = 96 << 10,
        ArenaBlockSize = 96 << 10,
    };

    protected VulkanContext Ctx { get; } = new(SplitOptions());

    public void Dispose()
    {
        Ctx.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>An F32 tensor holding <paramref name="data"/>, asserted to be split when it is larger than one binding.</summary>
    protected DeviceTensor Make(string name, float[] data, params long[] shape)
    {
        var t = DeviceTensor.Create(Ctx, name, DType.F32, shape, MemoryCategory.Workspace);
        t.Upload<float>(data);
        Assert.True(t.Segments.Count > 1 || data.Length * 4 <= BindingBytes, $"'{name}' should be split");
        return t;
    }
}
