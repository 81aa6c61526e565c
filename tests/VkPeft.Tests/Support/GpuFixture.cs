// One Vulkan context (validation layer on) shared by the GPU tests of a collection; the device is lavapipe in CI.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Tests.Support;

public sealed class GpuFixture : IDisposable
{
    public GpuFixture()
    {
        Context = new VulkanContext(Options());
    }

    public VulkanContext Context { get; }

    /// <summary>Test options: validation always on, every message fails the test.</summary>
    public static RuntimeOptions Options() => new() { Validation = true, ThrowOnValidation = true };

    public void Dispose() => Context.Dispose();
}

[CollectionDefinition("gpu")]
public sealed class GpuCollection : ICollectionFixture<GpuFixture>;
