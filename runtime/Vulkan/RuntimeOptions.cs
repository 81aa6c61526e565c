// Options for creating a VulkanContext: device choice, validation, memory budget, and lowered limits for tests.
namespace VkPeft.Runtime.Vulkan;

public sealed record RuntimeOptions
{
    /// <summary>Device index or name substring; null picks the best (discrete &gt; integrated &gt; virtual &gt; CPU). Env: VKPEFT_DEVICE.</summary>
    public string? Device { get; init; }

    /// <summary>Enable VK_LAYER_KHRONOS_validation; every message is recorded and, with <see cref="ThrowOnValidation"/>, fails the next sync.</summary>
    public bool Validation { get; init; }

    /// <summary>Throw when the validation layer reported anything (tests keep this on).</summary>
    public bool ThrowOnValidation { get; init; } = true;

    /// <summary>Total device bytes the arena may hold; null means the device's own size. Overruns throw DeviceMemoryBudgetException.</summary>
    public ulong? MemoryBudget { get; init; }

    /// <summary>Total bytes the host arena (offloaded state) may hold; null means no limit beyond the driver's.</summary>
    public ulong? HostMemoryBudget { get; init; }

    /// <summary>Lower maxStorageBufferRange (tests use this to reach split-binding paths on any device).</summary>
    public ulong? MaxStorageBufferRange { get; init; }

    /// <summary>Lower maxMemoryAllocationSize (tests use this to reach multi-allocation tensors on any device).</summary>
    public ulong? MaxMemoryAllocationSize { get; init; }

    /// <summary>Size of the large blocks the arena sub-allocates from; null picks min(256 MiB, max allocation).</summary>
    public ulong? ArenaBlockSize { get; init; }

    /// <summary>Switch subgroup-operation fast paths off, so the shared-memory fallbacks run.</summary>
    public bool DisableSubgroupOps { get; init; }

    /// <summary>Force the fp32 reference kernel paths (no fp16 tiles or other fast variants). Env: VKPEFT_KERNELS=safe.</summary>
    public bool SafeKernels { get; init; }

    /// <summary>Where one-line runtime warnings go (a fast kernel switched off after its self-check); default stderr.</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Collect per-kernel GPU time with timestamp queries.</summary>
    public bool Profile { get; init; }

    /// <summary>
    /// Treat device memory as not host-mapped even where it is (lavapipe, integrated GPUs), so every transfer goes
    /// through staging as on a discrete GPU: tests and benchmarks of the staging paths on any device.
    /// </summary>
    public bool DisableHostMappedMemory { get; init; }

    /// <summary>
    /// Small transfers through the reusable staging ring (default); off: a fresh staging buffer and a host wait per
    /// transfer, as before the ring (benchmarks compare the two).
    /// </summary>
    public bool StagingRing { get; init; } = true;

    /// <summary>Dispatches recorded before the recorder submits a batch on its own.</summary>
    public int DispatchesPerSubmit { get; init; } = 1024;

    /// <summary>Options from the environment: VKPEFT_DEVICE, VKPEFT_VALIDATION=1, VKPEFT_MEMORY_BUDGET, VKPEFT_PROFILE=1, VKPEFT_KERNELS=safe.</summary>
    public static RuntimeOptions FromEnvironment()
    {
        Func<string, string?> env = Environment.GetEnvironmentVariable;
        return new RuntimeOptions
        {
            Device = string.IsNullOrWhiteSpace(env("VKPEFT_DEVICE")) ? null : env("VKPEFT_DEVICE"),
            Validation = env("VKPEFT_VALIDATION") == "1",
            MemoryBudget = env("VKPEFT_MEMORY_BUDGET") is { Length: > 0 } b ? ByteSize.Parse(b, "VKPEFT_MEMORY_BUDGET") : null,
            Profile = env("VKPEFT_PROFILE") == "1",
            SafeKernels = env("VKPEFT_KERNELS") == "safe",
        };
    }
}
