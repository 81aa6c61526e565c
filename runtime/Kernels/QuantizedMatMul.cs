// Kernels on quantized weights: dequantize to f32, the fused forward Y = X·deq(W)ᵀ and the fused input gradient
// dX = dY·deq(W), each decoding the packed weight inside the shader (no full-precision or transposed copy).
using System.Runtime.InteropServices;
using VkPeft.Quant;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class QuantizedMatMul
{
    [StructLayout(LayoutKind.Sequential)]
    private struct DequantPush { public uint Count, GroupsX, OutOffset, Start, QBlock, QCols; public float QOffset; }

    /// <summary>The shaders.list format axis value of a weight: nf4, nf4_dq, fp4, fp4_dq, int4, q4_0, q4_1, q8_0.</summary>
    public static ShaderFormat FormatOf(DeviceQuantizedWeight w) => w.Format switch
    {
        WeightFormat.Nf4 => w.DoubleQuant ? ShaderFormat.Nf4Dq : ShaderFormat.Nf4,
        WeightFormat.Fp4 => w.DoubleQuant ? ShaderFormat.Fp4Dq : ShaderFormat.Fp4,
        WeightFormat.Int4Group => ShaderFormat.Int4,
        WeightFormat.Gguf => w.GgmlType switch
        {
            GgmlType.Q4_0 => ShaderFormat.Q40,
            GgmlType.Q4_1 => ShaderFormat.Q41,
            GgmlType.Q8_0 => ShaderFormat.Q80,
            var t => throw new ArgumentException($"'{w.Name}': GGUF type {t} is not a quantized weight format the kernels decode"),
        },
        var f => throw new ArgumentException($"'{w.Name}': unknown weight format {f}"),
    };

    private static ShaderId Shader(ShaderFamily family, DeviceQuantizedWeight w) => ShaderCatalog.Find(new ShaderKey(family, Format: FormatOf(w)));

    /// <summary>
    /// fp16 decoded-weight tiles in the shared-tiles fused 4-bit GEMM: used where the device has shaderFloat16 and the
    /// first use agreed with the fp32 tiles on an NF4+DQ weight of awkward shape (forward, input gradient, and the input
    /// gradient of a tiny-magnitude dy; A stays fp32 on this path).
    /// </summary>
    public static readonly FastKernel Fp16Tiles = new("fused 4-bit matmul (shared tiles)", "fp16 weight tiles", "fp32 tiles",
        caps => caps.ShaderFloat16 ? null : "the device lacks shaderFloat16",
        ctx => SelfCheckAgainstFp32Tiles(ctx, (a, w, c, forward) => RunShared(a, w, c, forward, fp16: true, coop: false), forward: true, inputGrad: true, aInFp16: false));

    /// <summary>
    /// NVIDIA cooperative matrices (fp16 A and B tiles, fp32 accumulators) in the fused 4-bit forward x·deq(W)ᵀ: used
    /// where the device lists 16x16x16 fp16 x fp16 -> fp32 subgroup matrices with 32-wide subgroups, after the first
    /// use agreed with the fp32 tiles.
    /// </summary>
    public static readonly FastKernel CoopMatrix = new("fused 4-bit matmul forward (shared tiles)", "NV cooperative matrices 16x16x16 fp16->fp32", "fp32 tiles",
        CoopMatrixUnavailable,
        ctx => SelfCheckAgainstFp32Tiles(ctx, (a, w, c, forward) => RunShared(a, w, c, forward, fp16: false, coop: true), forward: true, inputGrad: false, aInFp16: true));

    /// <summary>
    /// The cooperative-matrix input gradient dy·deq(W), checked on its own: it rounds dy to fp16 (after scaling each row
    /// by a power of two that puts its largest |value| near 2¹⁴, divided out of the result), so besides unit-scale
    /// gradients the self-check feeds a tiny-magnitude dy (<see cref="TinyGradientScale"/>, as late in training), which
    /// an unscaled fp16 cast would flush to zero; on a mismatch the input gradient runs on the fp32-A paths.
    /// </summary>
    public static readonly FastKernel CoopMatrixInputGrad = new("fused 4-bit matmul input gradient (shared tiles)", "NV cooperative matrices 16x16x16 fp16->fp32", "fp32 tiles",
        CoopMatrixUnavailable,
        ctx => SelfCheckAgainstFp32Tiles(ctx, (a, w, c, forward) => RunShared(a, w, c, forward, fp16: false, coop: true), forward: false, inputGrad: true, aInFp16: true));

    /// <summary>Magnitude of the tiny-gradient self-check case: 2⁻²⁷ ≈ 7.5e-9, below half of fp16's smallest subnormal (2⁻²⁵).</summary>
    public const double TinyGradientScale = 1.0 / (1 << 27);

    /// <summary>A fused 4-bit kernel under self-check: c = a·deq(w)ᵀ (forward) or c = a·deq(w) (input gradient).</summary>
    public delegate void FusedKernel(DeviceTensor a, DeviceQuantizedWeight w, DeviceTensor c, bool forward);

    private static void RunShared(DeviceTensor a, DeviceQuantizedWeight w, DeviceTensor c, bool forward, bool fp16, bool coop)
    {
        if (forward) Forward(a, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: fp16, coopMatrix: coop);
        else InputGrad(a, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: fp16, coopMatrix: coop);
    }

    /// <summary>Why this device cannot run the cooperative-matrix variants (null when it can).</summary>
    public static string? CoopMatrixUnavailable(DeviceCapabilities caps) =>
        KernelPaths.NvCooperativeMatrixUnavailable(caps, MatMulTiles.CoopMatrixSharedBytes, MatMulTiles.CoopMatrix.Invocations);

    /// <summary>
    /// Runs <paramref name="fast"/> and the fp32 tiles on M = 67, N = 33, K = 96 (not multiples of the tile or the
    /// 64-block; K a multiple of 32 so the forward decodes whole words): the forward, the input gradient, and the input
    /// gradient of a dy scaled by <see cref="TinyGradientScale"/> (fp32 holds it exactly; an fp16 cast flushes it to
    /// zero). They may differ by the fp16 rounding of each decoded weight (2⁻¹¹ relative; with <paramref name="aInFp16"/>
    /// the rounding of A too: 2·2⁻¹¹) plus twice the fp32 summation bound γ_K, times Σ|a·b|. Null when they agree, else
    /// the first mismatch.
    /// </summary>
    public static string? SelfCheckAgainstFp32Tiles(VulkanContext ctx, FusedKernel fast, bool forward, bool inputGrad, bool aInFp16)
    {
        const int m = 67, n = 33, k = 96;
        var rng = new Random(12);
        float[] Values(int count, double scale) { var v = new float[count]; for (int i = 0; i < count; i++) v[i] = (float)((rng.NextDouble() * 2 - 1) * scale); return v; }
        var q = QuantizedLinearWeight.Bnb4Bit(Values(n * k, 0.05), n, k);
        var deq = q.Dequantize();
        using var w = DeviceQuantizedWeight.Upload(ctx, "selfcheck.w", q);
        var cases = new List<(bool Forward, double Scale)>();
        if (forward) cases.Add((true, 1));
        if (inputGrad) { cases.Add((false, 1)); cases.Add((false, TinyGradientScale)); }
        foreach (var (fwd, scale) in cases)
        {
            int inner = fwd ? k : n, outer = fwd ? n : k;
            var a = Values(m * inner, scale);
            using var ta = DeviceTensor.Create(ctx, "selfcheck.a", DType.F32, [m, inner], Memory.MemoryCategory.Workspace);
            using var tf = DeviceTensor.Create(ctx, "selfcheck.fast", DType.F32, [m, outer], Memory.MemoryCategory.Workspace);
            using var tr = DeviceTensor.Create(ctx, "selfcheck.ref", DType.F32, [m, outer], Memory.MemoryCategory.Workspace);
            ta.Upload<float>(a);
            fast(ta, w, tf, fwd);
            RunShared(ta, w, tr, fwd, fp16: false, coop: false);
            var (_, abs) = Reference.CpuReference.MatMul(a, deq, m, outer, inner, transposeB: fwd);
            var f = tf.ToArray<float>();
            var r = tr.ToArray<float>();
            double u = 1.0 / (1 << 24), gamma = (inner + 1) * u / (1 - (inner + 1) * u);
            for (int i = 0; i < f.Length; i++)
            {
                double bound = ((aInFp16 ? 2.0 : 1.0) / 2048 + 2 * gamma) * abs[i] + 1e-30;
                if (!(Math.Abs(f[i] - r[i]) <= bound))
                    return $"{(fwd ? "forward" : "input gradient")} [{m}x{inner}x{outer}]{(scale == 1 ? "" : $" at |a| ≤ {scale:0.#e0}")} element {i}: {f[i]} vs {r[i]}";
            }
        }
        return null;
    }

    /// <summary>
    /// The word variant whose output tile has the most rows that <paramref name="m"/> fills (the smallest when none
    /// does): each decoded code word is shared by every row of the tile.
    /// </summary>
    public static ShaderId LargestTileFor(ShaderFamily family, ShaderFormat format, uint m)
    {
        var tiles = ShaderCatalog.All.Where(s => s.Key.Family == family && s.Key.Format == format)
            .Select(s => (s.Id, Rows: MatMul.LanesTile(s.Id).M)).OrderBy(t => t.Rows).ToArray();
        if (tiles.Length == 0) throw new ArgumentException($"no {family} variant for {format} in shaders/shaders.list");
        return tiles.LastOrDefault(t => t.Rows <= m, tiles[0]).Id;
    }

    internal static Binding[] QuantBindings(DeviceQuantizedWeight w)
    {
        var codes = w.Codes.Range;
        var map = DeviceQuantizedWeight.DynamicMapOf(w.Context).Range;
        return
        [
            Binding.Read(codes),
            Binding.Read(w.Scale?.Range ?? codes),
            Binding.Read(w.Aux?.Range ?? codes),
            Binding.Read(map),
        ];
    }

    /// <summary>output[i] = dequantized element i of <paramref name="w"/> (output has out·in elements, may be split).</summary>
    public static void Dequantize(DeviceQuantizedWeight w, DeviceTensor output)
    {
        BasicOps.RequireF32(output);
        if (output.Count != w.Count) throw new ArgumentException($"dequantize '{w.Name}': output has {output.Count} elements, the weight {w.Count}");
        var ctx = w.Context;
        var p = ctx.Pipelines.Get(Shader(ShaderFamily.Dequant, w), BasicOps.WorkgroupSize);
        var q = QuantBindings(w);
        foreach (var piece in Pieces.Split(w.Count, [output], [1]))
        {
            var (gx, gy) = Pieces.Grid(BasicOps.Groups(piece.Count), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [q[0], q[1], q[2], q[3], Binding.Write(piece.Ranges[0])],
                new DequantPush
                {
                    Count = (uint)piece.Count, GroupsX = gx, OutOffset = piece.Offsets[0], Start = (uint)piece.Start,
                    QBlock = (uint)w.Blocksize, QCols = (uint)w.InFeatures, QOffset = w.DqOffset,
                }, gx, gy, 1, "dequant");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct EmbedPush { public uint Count, GroupsX, Dim, Vocab, IdsOffset, OutOffset, QBlock, QCols; public float QOffset; }

    /// <summary>
    /// output[t, :] = dequantized row ids[t] of a quantized embedding table <paramref name="table"/> [vocab, dim] (ids
    /// int32 [T], one binding; output [T, dim] may be split); out-of-range ids give zero rows. Writes output.
    /// </summary>
    public static void Embed(DeviceQuantizedWeight table, DeviceTensor ids, DeviceTensor output)
    {
        BasicOps.RequireF32(output);
        if (ids.DType != DType.I32) throw new ArgumentException($"'{ids.Name}' must hold int32 token ids");
        long tokens = ids.Count, dim = table.InFeatures;
        if (output.Count != tokens * dim) throw new ArgumentException($"embedding of {tokens} ids needs an output of [{tokens}, {dim}], got {output.ShapeString}");
        var ctx = table.Context;
        var p = ctx.Pipelines.Get(Shader(ShaderFamily.EmbeddingDequant, table), BasicOps.WorkgroupSize);
        var q = QuantBindings(table);
        foreach (var piece in Pieces.Split(tokens, [ids, output], [1, dim]))
        {
            long n = piece.Count * dim;
            var (gx, gy) = Pieces.Grid(BasicOps.Groups(n), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(p, [q[0], q[1], q[2], q[3], Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new EmbedPush
                {
                    Count = (uint)n, GroupsX = gx, Dim = (uint)dim, Vocab = (uint)table.OutFeatures, IdsOffset = piece.Offsets[0],
                    OutOffset = piece.Offsets[1], QBlock = (uint)table.Blocksize, QCols = (uint)table.InFeatures, QOffset = table.DqOffset,
                }, gx, gy, 1, "embedding_dequant");
        }
    }

    /// <summary>y[M,N] = alpha·x[M,K]·deq(W[N,K])ᵀ + beta·y: the base-layer forward (x and y may span several bindings, by rows).</summary>
    /// <param name="tiles">shared-tiles shape (default: the device's table entry)</param>
    /// <param name="fp16Tiles">decoded weight tile in fp16 (default: where the device has shaderFloat16)</param>
    public static void Forward(DeviceTensor x, DeviceQuantizedWeight w, DeviceTensor y, float alpha = 1, float beta = 0,
        MatMulAlgorithm algorithm = MatMulAlgorithm.Auto, MatMulTiles? tiles = null, bool? fp16Tiles = null, bool? coopMatrix = null)
    {
        BasicOps.RequireF32(x, y);
        long m = x.Rows;
        if (x.RowElements != w.InFeatures) throw new ArgumentException($"forward through '{w.Name}' [{w.OutFeatures}, {w.InFeatures}]: input '{x.Name}' {x.ShapeString} has rows of {x.RowElements}");
        if (y.Rows != m || y.RowElements != w.OutFeatures) throw new ArgumentException($"forward through '{w.Name}': output '{y.Name}' {y.ShapeString} should be [{m}, {w.OutFeatures}]");
        foreach (var piece in Pieces.Split(m, [x, y], [w.InFeatures, w.OutFeatures]))
            Run(piece.Ranges[0], piece.Ranges[1], piece.Offsets[0], piece.Offsets[1], w, (uint)piece.Count, (uint)w.OutFeatures, (uint)w.InFeatures,
                transposeB: true, alpha, beta, algorithm, tiles, fp16Tiles, coopMatrix);
    }

    /// <summary>dx[M,K] = alpha·dy[M,N]·deq(W[N,K]) + beta·dx: the input gradient through a frozen quantized layer.</summary>
    /// <param name="tiles">shared-tiles shape (default: the device's table entry)</param>
    /// <param name="fp16Tiles">decoded weight tile in fp16 (default: where the device has shaderFloat16)</param>
    public static void InputGrad(DeviceTensor dy, DeviceQuantizedWeight w, DeviceTensor dx, float alpha = 1, float beta = 0,
        MatMulAlgorithm algorithm = MatMulAlgorithm.Auto, MatMulTiles? tiles = null, bool? fp16Tiles = null, bool? coopMatrix = null)
    {
        BasicOps.RequireF32(dy, dx);
        long m = dy.Rows;
        if (dy.RowElements != w.OutFeatures) throw new ArgumentException($"input gradient through '{w.Name}' [{w.OutFeatures}, {w.InFeatures}]: dy '{dy.Name}' {dy.ShapeString} has rows of {dy.RowElements}");
        if (dx.Rows != m || dx.RowElements != w.InFeatures) throw new ArgumentException($"input gradient through '{w.Name}': dx '{dx.Name}' {dx.ShapeString} should be [{m}, {w.InFeatures}]");
        foreach (var piece in Pieces.Split(m, [dy, dx], [w.OutFeatures, w.InFeatures]))
            Run(piece.Ranges[0], piece.Ranges[1], piece.Offsets[0], piece.Offsets[1], w, (uint)piece.Count, (uint)w.InFeatures, (uint)w.OutFeatures,
                transposeB: false, alpha, beta, algorithm, tiles, fp16Tiles, coopMatrix);
    }

    private static void Run(Memory.BufferRange a, Memory.BufferRange c, uint aOffset, uint cOffset, DeviceQuantizedWeight w, uint m, uint n, uint k,
        bool transposeB, float alpha, float beta, MatMulAlgorithm algorithm, MatMulTiles? tiles, bool? fp16Tiles, bool? coopMatrix)
    {
        var ctx = w.Context;
        if (algorithm == MatMulAlgorithm.Auto) algorithm = MatMul.Choose(ctx);
        if (algorithm == MatMulAlgorithm.Lanes && !MatMul.LanesSupported(ctx))
            throw new ArgumentException("quantized matmul: the lanes algorithm needs 8-lane subgroups with broadcast");
        bool lanes = algorithm == MatMulAlgorithm.Lanes;
        bool nibbles = w.Format is WeightFormat.Nf4 or WeightFormat.Fp4 or WeightFormat.Int4Group;
        bool coop = !lanes && (coopMatrix ?? (fp16Tiles == null && tiles == null && ctx.Kernels.Use(transposeB ? CoopMatrix : CoopMatrixInputGrad)));
        if (coop && CoopMatrix.Unavailable(ctx.Caps) is { } noCoop) throw new ArgumentException("quantized matmul: " + noCoop);
        bool fp16 = !coop && (fp16Tiles ?? (!lanes && ctx.Kernels.Use(Fp16Tiles)));
        if (fp16 && !ctx.Caps.ShaderFloat16) throw new ArgumentException("quantized matmul: fp16 tiles need the shaderFloat16 feature");
        tiles = coop ? MatMulTiles.CoopMatrix : tiles ?? MatMulTiles.For(ctx.Caps, fp16);
        if (!lanes && !coop && !MatMulTiles.Fits(tiles, ctx.Caps, fp16)) throw new ArgumentException($"quantized matmul: tiles {tiles.Name} do not fit this device");
        var tileType = fp16 ? ShaderTileType.F16 : ShaderTileType.F32;
        // Word paths decode whole 4-bit code words of one block. Lanes: forward walks K along rows (K a multiple of
        // the block), the input gradient 8 output columns per lane (N = in_features a multiple of 8). Tiles: chunks of
        // BK values along K (forward) or 32 columns (input gradient) inside one block.
        bool word = nibbles && (lanes
            ? w.Blocksize % 8 == 0 && (transposeB ? k % 8 == 0 && k % w.Blocksize == 0 : n % 8 == 0)
            : transposeB ? k % tiles.BK == 0 && w.Blocksize % tiles.BK == 0 && tiles.BK % 8 == 0
                         : n % 32 == 0 && w.Blocksize % 32 == 0 && tiles.BN % 32 == 0);
        var format = FormatOf(w);
        ShaderId shader;
        if (coop)
            shader = ShaderCatalog.Find(new ShaderKey(word ? ShaderFamily.QmatmulWordCoopmat : ShaderFamily.QmatmulCoopmat, Format: format));
        else if (!lanes)
            shader = ShaderCatalog.Find(new ShaderKey(word ? ShaderFamily.QmatmulWord : ShaderFamily.Qmatmul, Format: format, TileType: tileType));
        else
        {
            var family = transposeB ? (word ? ShaderFamily.QmatmulLanesWord : ShaderFamily.QmatmulLanes)
                : (word ? ShaderFamily.QmatmulLanesNnWord : ShaderFamily.QmatmulLanesNn);
            shader = word ? LargestTileFor(family, format, m) : Shader(family, w);
        }
        bool vecA = k % 4 == 0 && aOffset % 4 == 0;
        var pipeline = !lanes ? ctx.Pipelines.Get(shader, tiles.Spec(transposeB, vecA)) : ctx.Pipelines.Get(shader);
        var (tileM, tileN) = !lanes ? (tiles.BM, tiles.BN) : MatMul.LanesTile(shader);
        uint maxY = ctx.Caps.MaxComputeWorkGroupCount[1];
        var q = QuantBindings(w);
        for (uint r0 = 0; r0 < m; r0 += maxY * tileM)
        {
            uint rows = Math.Min(m - r0, maxY * tileM);
            var push = new MatMul.MatPush
            {
                M = rows, N = n, K = k, Lda = k, Ldb = transposeB ? k : n, Ldc = n,
                AOffset = aOffset + r0 * k, BOffset = 0, COffset = cOffset + r0 * n, Alpha = alpha, Beta = beta,
                QBlock = (uint)w.Blocksize, QCols = (uint)w.InFeatures, QOffset = w.DqOffset,
            };
            if (word && transposeB && push.AOffset % 4 != 0) throw new InvalidOperationException("aligned rows expected");
            ctx.Commands.Dispatch(pipeline,
                [Binding.Read(a), q[0], q[1], q[2], q[3], beta != 0 ? Binding.ReadWrite(c) : Binding.Write(c)],
                push, (n + tileN - 1) / tileN, (rows + tileM - 1) / tileM, 1, transposeB ? "qmatmul" : "qmatmul_dx");
        }
    }
}
