// Device tensors surrounded by guard regions: a kernel writing outside its output corrupts a sentinel the test checks.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Tests.Support;

public sealed class Guarded : IDisposable
{
    /// <summary>64 floats = 256 bytes each side keeps the inner view aligned for any device's minStorageBufferOffsetAlignment.</summary>
    public const int GuardElements = 64;
    public const float Sentinel = -12345.678f;

    private Guarded(DeviceTensor backing, DeviceTensor inner) { Backing = backing; Tensor = inner; }

    public DeviceTensor Backing { get; }
    /// <summary>The tensor the kernel sees.</summary>
    public DeviceTensor Tensor { get; }

    public static Guarded Create(VulkanContext ctx, string name, params long[] shape)
    {
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var backing = DeviceTensor.Create(ctx, name + ".guarded", DType.F32, [n + 2 * GuardElements], MemoryCategory.Workspace);
        BasicOps.Fill(backing, Sentinel);
        var inner = backing.RowsView(GuardElements, n).Reshape(shape);
        return new Guarded(backing, inner);
    }

    public void Upload(float[] data) => Tensor.Upload<float>(data);

    /// <summary>Downloads the inner values and asserts both guard regions still hold the sentinel.</summary>
    public float[] Download()
    {
        var all = Backing.ToArray<float>();
        for (int i = 0; i < GuardElements; i++)
        {
            Assert.True(all[i] == Sentinel, $"guard before '{Tensor.Name}' overwritten at {i - GuardElements}: {all[i]}");
            Assert.True(all[^(i + 1)] == Sentinel, $"guard after '{Tensor.Name}' overwritten at +{i}: {all[^(i + 1)]}");
        }
        return all.AsSpan(GuardElements, all.Length - 2 * GuardElements).ToArray();
    }

    public void Dispose() => Backing.Dispose();
}
