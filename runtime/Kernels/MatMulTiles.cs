// Tile shapes of the shared-memory matmul (shaders/matmul.comp, specialization constants 2..6) as data: one table,
// and the rule that picks the first entry the device can run (its kind, shared memory and invocation limits).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// One tile shape: BM x BN outputs per workgroup, BK along K per shared slice, TM x TN outputs per invocation; the
/// workgroup has (BM/TM)·(BN/TN) invocations. <paramref name="Kinds"/> are the device kinds it is meant for.
/// </summary>
public sealed record MatMulTiles(string Name, uint BM, uint BN, uint BK, uint TM, uint TN, DeviceKind[] Kinds)
{
    public uint Invocations => BM / TM * (BN / TN);

    /// <summary>Shared bytes of the double-buffered A (fp32) and B (fp32, or fp16 decoded weights) tiles, padded rows.</summary>
    public uint SharedBytes(bool fp16B) => 2 * BK * ((BM + 4) * 4 + (BN + (fp16B ? 8u : 4u)) * (fp16B ? 2u : 4u));

    /// <summary>Specialization constants 0..6 of matmul.comp (workgroup size, TRANS_B, BM, BN, BK, TM, TN) and 7 (VEC_A).</summary>
    public uint[] Spec(bool transposeB, bool vecA) => [Invocations, transposeB ? 1u : 0u, BM, BN, BK, TM, TN, vecA ? 1u : 0u];

    private static readonly DeviceKind[] Gpus = [DeviceKind.DiscreteGpu, DeviceKind.IntegratedGpu, DeviceKind.VirtualGpu, DeviceKind.Other];
    private static readonly DeviceKind[] Any = [.. Gpus, DeviceKind.Cpu];

    /// <summary>
    /// The table, best first. GPUs get 128x128 workgroup tiles with 8x8 outputs per invocation (34 KiB of shared memory
    /// in fp32, 26 KiB with fp16 weights); devices with less shared memory the 64x64 and 32x32 shapes (the 32x32 one fits
    /// the 16 KiB every Vulkan device offers). BK = 16 keeps each forward chunk of a 4-bit row inside one 64-block.
    /// </summary>
    public static readonly MatMulTiles[] Table =
    [
        new("128x128x16, 8x8 per invocation", 128, 128, 16, 8, 8, Gpus),
        new("64x64x16, 4x4 per invocation", 64, 64, 16, 4, 4, Any),
        new("32x32x16, 2x2 per invocation", 32, 32, 16, 2, 2, Any),
    ];

    /// <summary>
    /// Skinny products (N ≤ 16 or ≤ 32 output columns: LoRA's x·Aᵀ and dy·B at small rank) on the shared-tiles path:
    /// 64 rows x N columns per workgroup, so a tile pads at most 15 (31) columns where the square shapes pad 75-97%.
    /// </summary>
    public static readonly MatMulTiles[] Skinny =
    [
        new("64x16x16, 4x1 per invocation", 64, 16, 16, 4, 1, Any),
        new("64x32x16, 4x2 per invocation", 64, 32, 16, 4, 2, Any),
    ];

    /// <summary>The narrowest skinny tile that holds <paramref name="n"/> columns and fits the device, or null.</summary>
    public static MatMulTiles? ForSkinny(DeviceCapabilities caps, long n) => Skinny.FirstOrDefault(t => n <= t.BN && Fits(t, caps, false));

    /// <summary>
    /// Tile of the cooperative-matrix variants (COOPMAT): four subgroups of 32, each a 32x32 block as 2x2 16x16x16
    /// matrices; TM x TN = 4 x 8 only sizes the workgroup ((64/4)·(64/8) = 128 invocations). BK = 32: two matrix steps
    /// per slice, and whole 32-value chunks of a 4-bit row.
    /// </summary>
    public static readonly MatMulTiles CoopMatrix = new("64x64x32, 2x2 cooperative 16x16x16 matrices per subgroup", 64, 64, 32, 4, 8, Gpus);

    /// <summary>
    /// Shared bytes of the cooperative-matrix variant: fp16 A and B tiles, double-buffered, the fp32 C tile, and each tile
    /// row's largest |A| and power-of-two scale.
    /// </summary>
    public static uint CoopMatrixSharedBytes => 2 * CoopMatrix.BK * ((CoopMatrix.BM + 8) * 2 + (CoopMatrix.BN + 8) * 2) + CoopMatrix.BM * (CoopMatrix.BN + 4) * 4
        + 2 * CoopMatrix.BM * 4;

    /// <summary>The first table entry for this device kind whose shared memory and workgroup size the device allows.</summary>
    public static MatMulTiles For(DeviceCapabilities caps, bool fp16B) =>
        Table.FirstOrDefault(t => t.Kinds.Contains(caps.Kind) && Fits(t, caps, fp16B))
        ?? throw new NotSupportedException($"'{caps.Name}': no matmul tile shape fits {caps.MaxComputeSharedMemorySize} bytes of shared memory");

    public static bool Fits(MatMulTiles t, DeviceCapabilities caps, bool fp16B) =>
        t.SharedBytes(fp16B) <= caps.MaxComputeSharedMemorySize && t.Invocations <= caps.MaxComputeWorkGroupInvocations
        && t.Invocations <= caps.MaxComputeWorkGroupSize[0];
}
