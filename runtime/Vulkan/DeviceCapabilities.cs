// Immutable description of what the chosen Vulkan device can do; options may lower the limits to reach fallback paths.
namespace VkPeft.Runtime.Vulkan;

public enum DeviceKind { Other, IntegratedGpu, DiscreteGpu, VirtualGpu, Cpu }

/// <summary>A memory heap of the device: size, whether it is device-local, and the budget/usage when VK_EXT_memory_budget is present.</summary>
public sealed record MemoryHeapInfo(int Index, ulong Size, bool DeviceLocal, ulong? Budget, ulong? Usage);

/// <summary>Limits and features of one physical device as the runtime uses them.</summary>
/// <summary>
/// One cooperative-matrix configuration a device lists: D[M,N] = A[M,K]·B[K,N] + C[M,N] with these component types
/// (Silk.NET names, e.g. Float16NV, Float32NV) at this scope (SubgroupNV).
/// </summary>
public sealed record CooperativeMatrixShape(uint M, uint N, uint K, string AType, string BType, string CType, string DType, string Scope);

public sealed record DeviceCapabilities
{
    /// <summary>VK_NV_cooperative_matrix configurations (empty where the extension or its feature is absent).</summary>
    public CooperativeMatrixShape[] CooperativeMatricesNV { get; init; } = [];

    public required string Name { get; init; }
    public required DeviceKind Kind { get; init; }
    public required uint VendorId { get; init; }
    public required uint DeviceId { get; init; }
    public required string ApiVersion { get; init; }
    public required string DriverName { get; init; }
    public required string DriverInfo { get; init; }

    public required ulong MaxStorageBufferRange { get; init; }
    public required ulong MaxMemoryAllocationSize { get; init; }
    public required ulong MaxBufferSize { get; init; }
    public required uint[] MaxComputeWorkGroupCount { get; init; }   // [x, y, z]
    public required uint[] MaxComputeWorkGroupSize { get; init; }    // [x, y, z]
    public required uint MaxComputeWorkGroupInvocations { get; init; }
    public required uint MaxComputeSharedMemorySize { get; init; }
    public required ulong MinStorageBufferOffsetAlignment { get; init; }
    public required uint MaxPushConstantsSize { get; init; }
    public required uint MaxPerStageStorageBuffers { get; init; }

    public required uint SubgroupSize { get; init; }
    public required bool SubgroupArithmetic { get; init; }
    public required bool SubgroupShuffle { get; init; }
    public required bool SubgroupBallot { get; init; }
    public required bool ShaderFloat16 { get; init; }
    public required bool ShaderInt8 { get; init; }
    public required bool StorageBuffer8Bit { get; init; }
    public required bool StorageBuffer16Bit { get; init; }
    public required bool BufferDeviceAddress { get; init; }
    public required bool TimestampsSupported { get; init; }
    public required float TimestampPeriodNs { get; init; }
    public required bool MemoryBudgetExtension { get; init; }
    public required bool UnifiedMemory { get; init; }

    public required MemoryHeapInfo[] Heaps { get; init; }

    /// <summary>Bytes of device-local memory across heaps (the card's VRAM, or system RAM for CPU devices).</summary>
    public ulong DeviceLocalBytes => Heaps.Where(h => h.DeviceLocal).Aggregate(0UL, (a, h) => a + h.Size);

    /// <summary>The largest contiguous range a kernel may bind: storage range and allocation size both bound it.</summary>
    public ulong MaxBindingBytes => Math.Min(MaxStorageBufferRange, MaxMemoryAllocationSize);
}
