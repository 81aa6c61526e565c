// GPU-vs-CPU kernel checks for `bench gpu-report`, runnable from a self-contained bundle without the test project: the
// fp32 matmul, the fused 4-bit forward and input gradient on every weight-tile path the device can run (fp32 tiles,
// fp16 tiles, NV cooperative matrices — forced, not only after the first-use self-check), attention forward and
// backward for each algorithm (NV cooperative matrices forced too, also on the self-check's large-score, tiny-dO cases),
// and AdamW, each against the float64 CPU reference within the same stated bounds as the
// test suite. A check reports its worst |error| / bound (≤ 1 passes) or the exception a path threw.
using VkPeft.Quant;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;

namespace VkPeft.Bench;

/// <summary>One GPU-vs-CPU comparison: the worst error over its bound (NaN when the path threw; Failure says why).</summary>
public sealed record KernelCheck(string Kernel, string Path, string Shape, double WorstErrorOverBound, string? Failure)
{
    public bool Passed => Failure == null && WorstErrorOverBound <= 1;
}

public static class GpuChecks
{
    private const double U = 1.0 / (1 << 24);

    /// <summary>Weight formats the fused kernels decode, each from fp32 weights [n, k] (GGUF needs k a multiple of 32).</summary>
    private static readonly (string Name, Func<float[], int, int, QuantizedLinearWeight> Quantize)[] Formats =
    [
        ("nf4", (w, n, k) => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Nf4, 64, doubleQuant: false)),
        ("nf4-dq", (w, n, k) => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Nf4, 64, doubleQuant: true)),
        ("fp4", (w, n, k) => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Fp4, 64, doubleQuant: false)),
        ("fp4-dq", (w, n, k) => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Fp4, 64, doubleQuant: true)),
        ("int4 g32", (w, n, k) => QuantizedLinearWeight.Int4Group(w, n, k, 32)),
        ("q4_0", (w, n, k) => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q4_0)),
        ("q4_1", (w, n, k) => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q4_1)),
        ("q8_0", (w, n, k) => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q8_0)),
    ];

    public static List<KernelCheck> Run(VulkanContext ctx, bool quick, Action<string> log)
    {
        var checks = new List<KernelCheck>();
        void Check(string kernel, string path, string shape, Func<double> compare)
        {
            KernelCheck c;
            try
            {
                double ratio = compare();
                c = new KernelCheck(kernel, path, shape, ratio, ratio <= 1 ? null : "error above the bound");
            }
            catch (Exception e) when (e is ArgumentException or VulkanException or InvalidOperationException or NotSupportedException)
            {
                c = new KernelCheck(kernel, path, shape, double.NaN, e.Message);
            }
            checks.Add(c);
            log($"  {(c.Passed ? "ok  " : "FAIL")} {kernel}, {path}, {shape}: worst error/bound {c.WorstErrorOverBound:F3}{(c.Failure is { } f ? " — " + f : "")}");
        }
        log("checking fp32 matmuls against the CPU reference...");
        MatMuls(ctx, Check);
        log("checking weight-gradient products Aᵀ·B (split-K on the shared-tiles path) against the CPU reference...");
        WeightGradients(ctx, Check);
        log("checking the fused 4-bit matmuls against the CPU reference...");
        Quantized(ctx, quick, Check);
        log("checking attention against the float64 reference...");
        Attention(ctx, quick, Check);
        log("checking AdamW against the float64 reference...");
        Check("adamw", "device", "4,099 values, 4 steps", () => AdamWRatio(ctx, 4099));
        return checks;
    }

    private delegate void CheckFn(string kernel, string path, string shape, Func<double> compare);

    /// <summary>Matmul algorithms this device runs: the shared tiles of its table entry, and lanes where subgroups allow.</summary>
    private static List<MatMulAlgorithm> Algorithms(VulkanContext ctx)
    {
        var list = new List<MatMulAlgorithm>();
        if (MatMulTiles.Fits(MatMulTiles.For(ctx.Caps, fp16B: false), ctx.Caps, false)) list.Add(MatMulAlgorithm.SharedTiles);
        if (MatMul.LanesSupported(ctx)) list.Add(MatMulAlgorithm.Lanes);
        return list;
    }

    /// <summary>
    /// C = A·op(B): M = 1, 3, 67, 600 with K and N off every tile and block size. Bound: recursive fp32 summation of K
    /// products, γ_K·Σ|a·b| (Higham §3.1), as in the matmul tests.
    /// </summary>
    private static void MatMuls(VulkanContext ctx, CheckFn check)
    {
        // The last two are LoRA's skinny products (N = rank): skinny tiles and split-K on the shared-tiles path.
        (int M, int K, int N)[] shapes = [(1, 96, 33), (3, 200, 67), (67, 300, 129), (600, 520, 257), (600, 2051, 16), (67, 1030, 33)];
        foreach (var algorithm in Algorithms(ctx))
            foreach (bool transposeB in new[] { true, false })
                foreach (var (m, k, n) in shapes)
                    check(transposeB ? "matmul f32 x·Wᵀ" : "matmul f32 x·W", algorithm.ToString(), $"{m}x{k}x{n}", () =>
                    {
                        var a = Values(m * k, m + k, 1f);
                        var b = Values(n * k, n + k, 1f);
                        using var ta = Upload(ctx, "check.a", a, m, k);
                        using var tb = Upload(ctx, "check.b", b, transposeB ? n : k, transposeB ? k : n);
                        using var tc = DeviceTensor.Create(ctx, "check.c", DType.F32, [m, n], MemoryCategory.Workspace);
                        MatMul.Run(ta, tb, tc, transposeB, algorithm: algorithm);
                        var (expected, abs) = CpuReference.MatMul(a, b, m, n, k, transposeB);
                        return MatMulRatio(expected, abs, tc.ToArray<float>(), k, 0);
                    });
    }

    /// <summary>
    /// C = Aᵀ·B summed over M rows (LoRA's dA = dTᵀ·X and dB = dYᵀ·T: a rank-sized side, thousands of rows): bound γ_M·Σ|a·b|.
    /// </summary>
    private static void WeightGradients(VulkanContext ctx, CheckFn check)
    {
        (int M, int N1, int N2)[] shapes = [(2048, 16, 300), (2048, 300, 16), (515, 65, 129)];
        foreach (var algorithm in Algorithms(ctx))
            foreach (var (m, n1, n2) in shapes)
                check("matmul_tn Aᵀ·B", algorithm.ToString(), $"{m} rows into {n1}x{n2}", () =>
                {
                    var a = Values(m * n1, m + n1, 1f);
                    var b = Values(m * n2, m + n2, 1f);
                    using var ta = Upload(ctx, "check.a", a, m, n1);
                    using var tb = Upload(ctx, "check.b", b, m, n2);
                    using var tc = DeviceTensor.Create(ctx, "check.c", DType.F32, [n1, n2], MemoryCategory.Workspace);
                    MatMulTn.Run(ta, tb, tc, 1, 0, algorithm);
                    var aT = new float[n1 * m];
                    for (int r = 0; r < m; r++)
                        for (int i = 0; i < n1; i++) aT[i * m + r] = a[r * n1 + i];
                    var (expected, abs) = CpuReference.MatMul(aT, b, n1, n2, m, transposeB: false);
                    return MatMulRatio(expected, abs, tc.ToArray<float>(), m, 0);
                });
    }

    /// <summary>
    /// Fused x·deq(W)ᵀ and dy·deq(W) for every format on every path, M = 1, 3, 67, 600, odd N, K off the block; NF4+DQ
    /// also at a shape that fills whole 128-class tiles. Bound: γ_K·Σ|a·b| plus, for fp16 weight tiles, 2⁻¹¹ relative
    /// rounding of each weight (cooperative matrices round the activations too: 2·2⁻¹¹).
    /// </summary>
    private static void Quantized(VulkanContext ctx, bool quick, CheckFn check)
    {
        var paths = new List<(string Name, MatMulAlgorithm Algorithm, bool Fp16, bool Coop, double Rounding)>();
        if (MatMul.LanesSupported(ctx)) paths.Add(("lanes", MatMulAlgorithm.Lanes, false, false, 0));
        paths.Add(("fp32 tiles", MatMulAlgorithm.SharedTiles, false, false, 0));
        if (ctx.Caps.ShaderFloat16) paths.Add(("fp16 weight tiles", MatMulAlgorithm.SharedTiles, true, false, 1.0 / 2048));
        if (QuantizedMatMul.CoopMatrixUnavailable(ctx.Caps) == null) paths.Add(("NV cooperative matrices", MatMulAlgorithm.SharedTiles, false, true, 2.0 / 2048));
        (int M, int N, int K)[] shapes = quick ? [(1, 33, 128), (67, 9, 192), (600, 5, 96)] : [(1, 33, 128), (3, 17, 172), (67, 9, 192), (600, 5, 96)];
        foreach (var (format, quantize) in Formats)
        {
            var cases = shapes.Select(s => s with { K = format.StartsWith('q') && s.K % 32 != 0 ? 96 : s.K }).ToList();
            if (format == "nf4-dq") cases.Add(quick ? (256, 257, 512) : (600, 520, 1024));
            foreach (var (m, n, k) in cases)
            {
                var q = quantize(Values(n * k, n * 31 + k, 0.05f), n, k);
                var deq = q.Dequantize();
                using var w = DeviceQuantizedWeight.Upload(ctx, "check.w", q);
                var x = Values(m * k, m + 1, 1f);
                var dy = Values(m * n, m + 2, 1f);
                var (yExpected, yAbs) = CpuReference.MatMul(x, deq, m, n, k, transposeB: true);
                var (dxExpected, dxAbs) = CpuReference.MatMul(dy, deq, m, k, n, transposeB: false);
                using var tx = Upload(ctx, "check.x", x, m, k);
                using var tdy = Upload(ctx, "check.dy", dy, m, n);
                using var ty = DeviceTensor.Create(ctx, "check.y", DType.F32, [m, n], MemoryCategory.Workspace);
                using var tdx = DeviceTensor.Create(ctx, "check.dx", DType.F32, [m, k], MemoryCategory.Workspace);
                foreach (var p in paths)
                {
                    check($"{format} fused forward", p.Name, $"{m}x{k}x{n}", () =>
                    {
                        QuantizedMatMul.Forward(tx, w, ty, algorithm: p.Algorithm, fp16Tiles: p.Fp16, coopMatrix: p.Coop);
                        return MatMulRatio(yExpected, yAbs, ty.ToArray<float>(), k, p.Rounding);
                    });
                    check($"{format} fused input grad", p.Name, $"{m}x{n}x{k}", () =>
                    {
                        QuantizedMatMul.InputGrad(tdy, w, tdx, algorithm: p.Algorithm, fp16Tiles: p.Fp16, coopMatrix: p.Coop);
                        return MatMulRatio(dxExpected, dxAbs, tdx.ToArray<float>(), n, p.Rounding);
                    });
                }
            }
        }
    }

    /// <summary>
    /// Causal grouped-query attention, forward (o, lse) and backward (dq, dk, dv), for each algorithm that has the head
    /// dimension: GQA 1, 2 and 4 to 1, a cached prefix, two packed sequences; bounds from AttentionTolerances (first-order
    /// error analysis on the actual inputs, as in the attention tests).
    /// </summary>
    private static void Attention(VulkanContext ctx, bool quick, CheckFn check)
    {
        bool coop = AttentionKernel.CoopMatrixUnavailable(ctx.Caps) == null;
        var algorithms = new List<AttentionAlgorithm> { AttentionAlgorithm.Direct, AttentionAlgorithm.Shared, AttentionAlgorithm.Flash };
        if (coop)
        {
            algorithms.Add(AttentionAlgorithm.FlashCoopMatrix);
            // The first-use self-check's cases (large scores, tiny dO) against float64, forced: the self-check compares
            // with the fp32 kernel, this with the exact result.
            foreach (var c in AttentionKernel.SelfCheckCases)
            {
                var s = c.Shape;
                var inputs = c.Inputs();
                double[] D(float[] x) => Array.ConvertAll(x, y => (double)y);
                double[] q = D(inputs.Q), k = D(inputs.K), v = D(inputs.V), dO = D(inputs.DO);
                var (o, lse) = AttentionReference.Forward(q, k, v, s);
                var (dq, dk, dv, _) = AttentionReference.Backward(q, k, v, dO, s);
                var tol = AttentionTolerances.For(s, q, k, v, dO, coopMatrix: true);
                string shape = $"self-check case: T {s.SeqLen}, cached {s.StartPos}, hd {s.HeadDim}, {s.NHeads}:{s.NKvHeads} heads, |q·k| up to {s.HeadDim * c.QkMagnitude * c.QkMagnitude:0}, dO up to {c.DoMagnitude:g2}";
                check("attention forward and backward", "flash, NV cooperative matrices (forced)", shape, () =>
                {
                    var r = AttentionKernel.RunForwardBackward(ctx, s, inputs, AttentionAlgorithm.FlashCoopMatrix);
                    return new[] { Ratio(o, r[0], i => tol.O[i]), Ratio(lse, r[1], i => tol.Lse[i]), Ratio(dq, r[2], i => tol.Dq[i]),
                        Ratio(dk, r[3], i => tol.Dk[i]), Ratio(dv, r[4], i => tol.Dv[i]) }.Max();
                });
            }
        }
        var shapes = new List<AttentionShape>
        {
            new(1, 67, 0, 8, 2, 64, 67),
            new(2, 3, 5, 4, 4, 128, 9),
            new(1, 33, 7, 4, 2, 48, 40),
        };
        if (!quick) shapes.Add(new AttentionShape(1, 600, 0, 8, 2, 128, 600));
        foreach (var s in shapes)
        {
            var q = LayerReference.ToDouble(Values(s.QCount, s.SeqLen + 1, 1.5f));
            var k = LayerReference.ToDouble(Values(s.KCount, s.SeqLen + 2, 1.5f));
            var v = LayerReference.ToDouble(Values(s.KCount, s.SeqLen + 3, 1f));
            var dO = LayerReference.ToDouble(Values(s.QCount, s.SeqLen + 4, 1f));
            var (o, lse) = AttentionReference.Forward(q, k, v, s);
            var (dq, dk, dv, _) = AttentionReference.Backward(q, k, v, dO, s);
            var fp32Tol = AttentionTolerances.For(s, q, k, v, dO);
            string shape = $"B {s.Batch}, T {s.SeqLen}, cached {s.StartPos}, hd {s.HeadDim}, {s.NHeads}:{s.NKvHeads} heads";
            var coopTol = coop ? AttentionTolerances.For(s, q, k, v, dO, coopMatrix: true) : null;
            foreach (var algorithm in algorithms)
            {
                var dims = algorithm switch
                {
                    AttentionAlgorithm.Flash => AttentionKernel.FlashHeadDims,
                    AttentionAlgorithm.FlashCoopMatrix => AttentionKernel.CoopMatrixHeadDims,
                    _ => AttentionKernel.HeadDims,
                };
                if (!dims.Contains(s.HeadDim)) continue;
                var tol = algorithm == AttentionAlgorithm.FlashCoopMatrix ? coopTol! : fp32Tol;
                long rows = (long)s.Batch * s.SeqLen, kvRows = (long)s.Batch * s.KvStride;
                using var tq = Upload(ctx, "check.q", ToFloat(q), rows, s.Ldq);
                using var tk = Upload(ctx, "check.k", ToFloat(k), kvRows, s.Ldk);
                using var tv = Upload(ctx, "check.v", ToFloat(v), kvRows, s.Ldk);
                using var tdO = Upload(ctx, "check.dO", ToFloat(dO), rows, s.Ldq);
                using var to = DeviceTensor.Create(ctx, "check.o", DType.F32, [rows, s.Ldq], MemoryCategory.Workspace);
                using var tl = DeviceTensor.Create(ctx, "check.lse", DType.F32, [s.Batch, s.NHeads, s.SeqLen], MemoryCategory.Workspace);
                using var tdq = DeviceTensor.Create(ctx, "check.dq", DType.F32, [rows, s.Ldq], MemoryCategory.Workspace);
                using var tdk = DeviceTensor.Create(ctx, "check.dk", DType.F32, [kvRows, s.Ldk], MemoryCategory.Workspace);
                using var tdv = DeviceTensor.Create(ctx, "check.dv", DType.F32, [kvRows, s.Ldk], MemoryCategory.Workspace);
                using var tdelta = DeviceTensor.Create(ctx, "check.delta", DType.F32, [s.Batch, s.NHeads, s.SeqLen], MemoryCategory.Workspace);
                string path = algorithm == AttentionAlgorithm.FlashCoopMatrix ? "flash, NV cooperative matrices (forced)" : algorithm.ToString().ToLowerInvariant();
                check("attention forward", path, shape, () =>
                {
                    AttentionKernel.Forward(tq, tk, tv, to, tl, s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);
                    return Math.Max(Ratio(o, to.ToArray<float>(), i => tol.O[i]), Ratio(lse, tl.ToArray<float>(), i => tol.Lse[i]));
                });
                check("attention backward", path, shape, () =>
                {
                    AttentionKernel.Backward(tq, tk, tv, to, tl, tdO, tdq, tdk, tdv, tdelta, s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);
                    return new[] { Ratio(dq, tdq.ToArray<float>(), i => tol.Dq[i]), Ratio(dk, tdk.ToArray<float>(), i => tol.Dk[i]), Ratio(dv, tdv.ToArray<float>(), i => tol.Dv[i]) }.Max();
                });
            }
        }
    }

    /// <summary>Four AdamW steps (weight decay, a gradient scale on step 3) against float64; bounds as the optimizer tests state them.</summary>
    private static double AdamWRatio(VulkanContext ctx, int n)
    {
        var s = new AdamWSettings(Lr: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1);
        var p = Values(n, 5, 1f);
        using var tp = Upload(ctx, "check.p", p, n, 1);
        using var tg = DeviceTensor.Create(ctx, "check.g", DType.F32, [n, 1], MemoryCategory.Workspace);
        using var tm = DeviceTensor.Create(ctx, "check.m", DType.F32, [n, 1], MemoryCategory.Workspace);
        using var tv = DeviceTensor.Create(ctx, "check.v", DType.F32, [n, 1], MemoryCategory.Workspace);
        BasicOps.Fill(tm, 0);
        BasicOps.Fill(tv, 0);
        double[] pd = LayerReference.ToDouble(p), md = new double[n], vd = new double[n];
        for (int step = 1; step <= 4; step++)
        {
            var g = Values(n, 100 * step, 0.01f * step);
            float gradScale = step == 3 ? 0.25f : 1f;
            tg.Upload<float>(g);
            AdamW.Step(tp, tg, tm, tv, step, s, gradScale);
            LayerReference.AdamWStep(pd, LayerReference.ToDouble(g), md, vd, step, s.Lr, s.Beta1, s.Beta2, s.Eps, s.WeightDecay, gradScale);
        }
        // A handful of fp32 roundings per state value per step (Vulkan's sqrt and division within 3 ulp), carried over
        // four steps: m and v within 16 ulp of their size, p within 8 ulp of |p| plus 64 ulp of the total update.
        return new[]
        {
            Ratio(md, tm.ToArray<float>(), i => 16 * U * (Math.Abs(md[i]) + 0.1 * 0.04)),
            Ratio(vd, tv.ToArray<float>(), i => 16 * U * Math.Abs(vd[i]) + 1e-45),
            Ratio(pd, tp.ToArray<float>(), i => 8 * U * Math.Abs(pd[i]) + 64 * U * 4 * s.Lr),
        }.Max();
    }

    /// <summary>Worst |actual − expected| / (γ_K + rounding·(1 + γ_K))·Σ|a·b|.</summary>
    private static double MatMulRatio(double[] expected, double[] absSum, float[] actual, int k, double rounding)
    {
        double gamma = (k + 1) * U / (1 - (k + 1) * U);
        return Ratio(expected, actual, i => (gamma + rounding * (1 + gamma)) * absSum[i] + 1e-30);
    }

    /// <summary>Worst |actual − expected| / bound over all elements; a NaN or a length mismatch counts as infinitely wrong.</summary>
    private static double Ratio(double[] expected, float[] actual, Func<int, double> bound)
    {
        if (expected.Length != actual.Length) return double.PositiveInfinity;
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double r = Math.Abs(actual[i] - expected[i]) / bound(i);
            if (!(r <= worst)) worst = double.IsNaN(r) ? double.PositiveInfinity : r;
        }
        return worst;
    }

    private static DeviceTensor Upload(VulkanContext ctx, string name, float[] values, long rows, long cols)
    {
        var t = DeviceTensor.Create(ctx, name, DType.F32, [rows, cols], MemoryCategory.Workspace);
        t.Upload<float>(values);
        return t;
    }

    private static float[] ToFloat(double[] x) => Array.ConvertAll(x, v => (float)v);

    private static float[] Values(int n, int seed, float scale)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return x;
    }
}
