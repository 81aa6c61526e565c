// fp32 matrix multiply C = alpha·A·op(B) + beta·C on the device, split into pieces when operands span several bindings.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>Which matmul shader runs: shared-memory tiles (GPUs) or lane-per-column register blocking (CPU devices).</summary>
public enum MatMulAlgorithm { Auto, SharedTiles, Lanes }

public static class MatMul
{
    /// <summary>
    /// Output tile of a lanes variant, read from its defines in the catalog: matmul_lanes.comp owns (RB·SG) x (CB·SG),
    /// matmul_lanes_nn.comp (B not transposed) RB·SG rows x SG lanes · 8 columns.
    /// </summary>
    public static (uint M, uint N) LanesTile(ShaderId shader)
    {
        var info = ShaderCatalog.Info(shader);
        return info.Source switch
        {
            "matmul_lanes.comp" => (info.DefineUInt("RB") * info.DefineUInt("SG"), info.DefineUInt("CB") * info.DefineUInt("SG")),
            "matmul_lanes_nn.comp" => (info.DefineUInt("RB") * info.DefineUInt("SG"), info.DefineUInt("SG") * 8),
            _ => throw new ArgumentException($"'{info.Name}' is not a lanes matmul variant"),
        };
    }

    /// <summary>The algorithm Auto picks on this device.</summary>
    public static MatMulAlgorithm Choose(VkPeft.Runtime.Vulkan.VulkanContext ctx) =>
        ctx.Caps.Kind == VkPeft.Runtime.Vulkan.DeviceKind.Cpu && LanesSupported(ctx) ? MatMulAlgorithm.Lanes : MatMulAlgorithm.SharedTiles;

    /// <summary>The lanes shader is compiled for 8-lane subgroups with broadcast (lavapipe on 256-bit SIMD).</summary>
    public static bool LanesSupported(VkPeft.Runtime.Vulkan.VulkanContext ctx) => ctx.Caps.SubgroupSize == 8 && ctx.Caps.SubgroupBallot;

    /// <summary>The push block of every matmul shader (shaders/include/matmul_push.glsl).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct MatPush
    {
        public uint M, N, K, Lda, Ldb, Ldc, AOffset, BOffset, COffset;
        public float Alpha, Beta;
        public uint QBlock, QCols;   // quantized B only: block/group size and in_features of the weight
        public float QOffset;        // quantized B only: double-quantization offset
    }

    /// <summary>
    /// C[M,N] = alpha·A[M,K]·B + beta·C where B is [K,N], or [N,K] used transposed when <paramref name="transposeB"/>
    /// (the nn.Linear weight layout: y = x·Wᵀ).
    /// </summary>
    /// <param name="tiles">shared-tiles shape (default: a skinny shape for N ≤ 32, else the device's entry of <see cref="MatMulTiles.Table"/>)</param>
    /// <param name="splitK">slices of K on the shared-tiles path (0: <see cref="SplitK.Choose"/> decides, for operands in
    /// one binding each; 1: none)</param>
    public static void Run(DeviceTensor a, DeviceTensor b, DeviceTensor c, bool transposeB, float alpha = 1, float beta = 0,
        MatMulAlgorithm algorithm = MatMulAlgorithm.Auto, MatMulTiles? tiles = null, int splitK = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(splitK);
        BasicOps.RequireF32(a, b, c);
        long m = a.Rows, k = a.RowElements;
        long n = transposeB ? b.Rows : b.RowElements;
        long kb = transposeB ? b.RowElements : b.Rows;
        if (kb != k) throw new ArgumentException($"matmul: A '{a.Name}' {a.ShapeString} and B '{b.Name}' {b.ShapeString}{(transposeB ? "ᵀ" : "")} disagree on K ({k} vs {kb})");
        if (c.Rows != m || c.RowElements != n) throw new ArgumentException($"matmul: C '{c.Name}' {c.ShapeString} should be [{m}, {n}]");
        var ctx = a.Context;
        if (algorithm == MatMulAlgorithm.Auto) algorithm = Choose(ctx);
        if (algorithm == MatMulAlgorithm.Lanes && !LanesSupported(ctx))
            throw new ArgumentException("matmul: the lanes algorithm needs 8-lane subgroups with broadcast");
        bool lanes = algorithm == MatMulAlgorithm.Lanes;
        if (lanes && splitK > 1) throw new ArgumentException("matmul: split-K runs on the shared-tiles algorithm");
        // The vec4 lanes variant has the same tile as the scalar one (same RB, CB, SG).
        tiles ??= (lanes ? null : MatMulTiles.ForSkinny(ctx.Caps, n)) ?? MatMulTiles.For(ctx.Caps, fp16B: false);
        if (!lanes && !MatMulTiles.Fits(tiles, ctx.Caps, false)) throw new ArgumentException($"matmul: tiles {tiles.Name} do not fit this device");
        var (tileM, tileN) = !lanes ? (tiles.BM, tiles.BN) : LanesTile(transposeB ? ShaderId.MatmulLanes : ShaderId.MatmulLanesNn);
        uint maxY = ctx.Caps.MaxComputeWorkGroupCount[1], maxX = ctx.Caps.MaxComputeWorkGroupCount[0];

        var mPieces = Pieces.Split(m, [a, c], [k, n]);
        // B pieces: along N (transposed, rows of B are output columns) or along K (rows of B are the inner dimension).
        var bPieces = Pieces.Split(transposeB ? n : k, [b], [transposeB ? k : n]);
        if (!lanes && mPieces.Count == 1 && bPieces.Count == 1 && m <= maxY * tileM && k > 1)
        {
            long groups = (m + tileM - 1) / tileM * ((n + tileN - 1) / tileN);
            int splits = splitK > 0 ? (int)Math.Min(splitK, k) : SplitK.Choose(groups, k, m * n);
            if (splits > 1)
            {
                RunSplit(ctx, mPieces[0], bPieces[0], m, n, k, transposeB, alpha, beta, tiles, splits);
                return;
            }
        }
        foreach (var mp in mPieces)
        {
            for (int bi = 0; bi < bPieces.Count; bi++)
            {
                var bp = bPieces[bi];
                long n0 = transposeB ? bp.Start : 0, nCount = transposeB ? bp.Count : n;
                long k0 = transposeB ? 0 : bp.Start, kCount = transposeB ? k : bp.Count;
                for (long r0 = 0; r0 < mp.Count; r0 += maxY * tileM)
                {
                    long rows = Math.Min(mp.Count - r0, maxY * tileM);
                    uint gx = (uint)((nCount + tileN - 1) / tileN), gy = (uint)((rows + tileM - 1) / tileM);
                    if (gx > maxX) throw new ArgumentException($"matmul: N = {nCount} needs {gx} workgroups, over the device limit {maxX}");
                    var push = new MatPush
                    {
                        M = (uint)rows, N = (uint)nCount, K = (uint)kCount,
                        Lda = (uint)k, Ldb = (uint)(transposeB ? k : n), Ldc = (uint)n,
                        AOffset = mp.Offsets[0] + (uint)(r0 * k + k0), BOffset = bp.Offsets[0], COffset = mp.Offsets[1] + (uint)(r0 * n + n0),
                        Alpha = alpha, Beta = transposeB || bi == 0 ? beta : 1f,
                    };
                    bool vec4 = lanes && transposeB && push.K % 4 == 0 && push.Lda % 4 == 0 && push.Ldb % 4 == 0
                                && push.AOffset % 4 == 0 && push.BOffset % 4 == 0;
                    bool vecA = push.K % 4 == 0 && push.Lda % 4 == 0 && push.AOffset % 4 == 0;
                    var pipeline = !lanes ? ctx.Pipelines.Get(ShaderId.Matmul, tiles.Spec(transposeB, vecA))
                        : !transposeB ? ctx.Pipelines.Get(ShaderId.MatmulLanesNn)
                        : ctx.Pipelines.Get(vec4 ? ShaderId.MatmulLanesVec4 : ShaderId.MatmulLanes);
                    ctx.Commands.Dispatch(pipeline,
                        [Binding.Read(mp.Ranges[0]), Binding.Read(bp.Ranges[0]), push.Beta != 0 ? Binding.ReadWrite(mp.Ranges[1]) : Binding.Write(mp.Ranges[1])],
                        push, gx, gy, 1, "matmul");
                }
            }
        }
    }

    /// <summary>
    /// C = alpha·A·op(B) + beta·C as <paramref name="splits"/> slices of K (multiples of 4, so vec4 loads of A stay
    /// aligned), each written to its own scratch partial, then summed in slice order by splitk_sum.
    /// </summary>
    private static void RunSplit(VkPeft.Runtime.Vulkan.VulkanContext ctx, Piece mp, Piece bp, long m, long n, long k, bool transposeB,
        float alpha, float beta, MatMulTiles tiles, int splits)
    {
        long slice = ((k + splits - 1) / splits + 3) / 4 * 4;
        splits = (int)((k + slice - 1) / slice);
        long stride = SplitK.PartialStride(ctx, m * n);
        uint gx = (uint)((n + tiles.BN - 1) / tiles.BN), gy = (uint)((m + tiles.BM - 1) / tiles.BM);
        for (int s = 0; s < splits; s++)
        {
            long k0 = s * slice, kCount = Math.Min(slice, k - k0);
            var push = new MatPush
            {
                M = (uint)m, N = (uint)n, K = (uint)kCount,
                Lda = (uint)k, Ldb = (uint)(transposeB ? k : n), Ldc = (uint)n,
                AOffset = mp.Offsets[0] + (uint)k0, BOffset = bp.Offsets[0] + (uint)(transposeB ? k0 : k0 * n), COffset = 0,
                Alpha = 1, Beta = 0,
            };
            bool vecA = push.K % 4 == 0 && push.Lda % 4 == 0 && push.AOffset % 4 == 0;
            ctx.Commands.Dispatch(ctx.Pipelines.Get(ShaderId.Matmul, tiles.Spec(transposeB, vecA)),
                [Binding.Read(mp.Ranges[0]), Binding.Read(bp.Ranges[0]), Binding.Write(SplitK.Partial(ctx, splits, stride, s))],
                push, gx, gy, 1, "matmul.splitk");
        }
        SplitK.Sum(ctx, splits, stride, m * n, mp.Ranges[1], mp.Offsets[1], alpha, beta);
    }
}
