// `./vkpeft bench kernels`: device peaks, then each kernel's throughput as a fraction of them and against the CPU reference.
using System.Globalization;
using System.Text.Json.Nodes;
using Spectre.Console;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public sealed record KernelResult(string Kernel, string Shape, double Seconds, double Gflops, double FractionOfPeak, string Bound, double? CpuSeconds);

public static class KernelBench
{
    /// <summary>The groups of kernels <c>bench kernels --only</c> can pick.</summary>
    public static readonly string[] Groups = ["matmul", "quantized", "lora", "attention"];

    public static (DevicePeak Peak, List<KernelResult> Results) Run(VulkanContext ctx, bool quick, Action<string> log, IReadOnlyCollection<string>? only = null)
    {
        bool Want(string group) => only == null || only.Count == 0 || only.Contains(group);
        log("measuring device peaks (FMA throughput, copy bandwidth)...");
        var peak = DevicePeaks.Measure(ctx, quick);
        log($"peak: {peak.FmaGflops:F1} GFLOP/s fp32 FMA, {peak.CopyGBps:F1} GB/s copy");
        var results = new List<KernelResult>();
        (int M, int K, int N)[] shapes = quick ? [(256, 1024, 1024), (512, 512, 512)] : [(512, 4096, 4096), (2048, 2048, 2048)];
        foreach (var (m, k, n) in Want("matmul") ? shapes : [])
        {
            log($"matmul {m}x{k}x{n}...");
            using var a = DeviceTensor.Create(ctx, "a", DType.F32, [m, k], MemoryCategory.Workspace);
            using var w = DeviceTensor.Create(ctx, "w", DType.F32, [n, k], MemoryCategory.Workspace);
            using var c = DeviceTensor.Create(ctx, "c", DType.F32, [m, n], MemoryCategory.Workspace);
            a.Upload<float>(Random(m * k, 1));
            w.Upload<float>(Random(n * k, 2));
            double s = GpuTimer.MedianSeconds(ctx, () => MatMul.Run(a, w, c, transposeB: true), quick ? 3 : 5);
            double gflops = 2.0 * m * n * k / s / 1e9;
            results.Add(new KernelResult("matmul f32 (x·Wᵀ)", $"{m}x{k}x{n}", s, gflops, gflops / peak.FmaGflops, "compute", CpuMatmulSeconds(m, k, n)));
        }
        if (Want("quantized")) RunQuantized(ctx, peak, quick, log, results);
        if (Want("lora")) RunLoraProducts(ctx, peak, quick, log, results);
        if (Want("attention")) RunAttention(ctx, peak, quick, log, results);
        return (peak, results);
    }

    /// <summary>
    /// Causal attention forward and backward, one sequence, 4:1 grouped-query (8 query heads, 2 kv heads), head dimension
    /// 64 and 128, T = 512 and 2,048 (and 8,192 without --quick), for each algorithm. FLOPs are the useful work of the
    /// causal half: forward 4·hd per (query, key) pair per head (q·k and p·v), backward 10·hd (s recomputed, dP, dv, dk,
    /// dq; kernels that recompute s and dP twice do more than they are credited for). Where the device offers them, the
    /// flash kernels with NV cooperative matrices run too (forced, whatever the self-check decided), as a fraction of the
    /// measured cooperative-matrix peak (their hi/lo operands do three products per score: more than they are credited for).
    /// </summary>
    private static void RunAttention(VulkanContext ctx, DevicePeak peak, bool quick, Action<string> log, List<KernelResult> results)
    {
        var algorithms = new List<AttentionAlgorithm> { AttentionAlgorithm.Direct, AttentionAlgorithm.Flash };
        if (Attention.CoopMatrixUnavailable(ctx.Caps) == null && peak.CoopMatrixGflops != null) algorithms.Add(AttentionAlgorithm.FlashCoopMatrix);
        int[] lengths = quick ? [512, 2048] : [512, 2048, 8192];
        const int heads = 8, kvHeads = 2;
        foreach (int hd in new[] { 64, 128 })
            foreach (int t in lengths)
            {
                log($"attention T = {t}, head dim {hd}...");
                using var q = DeviceTensor.Create(ctx, "q", DType.F32, [t, heads * hd], MemoryCategory.Workspace);
                using var k = DeviceTensor.Create(ctx, "k", DType.F32, [t, kvHeads * hd], MemoryCategory.Workspace);
                using var v = DeviceTensor.Create(ctx, "v", DType.F32, [t, kvHeads * hd], MemoryCategory.Workspace);
                using var o = DeviceTensor.Create(ctx, "o", DType.F32, [t, heads * hd], MemoryCategory.Workspace);
                using var dO = DeviceTensor.Create(ctx, "dO", DType.F32, [t, heads * hd], MemoryCategory.Workspace);
                using var dq = DeviceTensor.Create(ctx, "dq", DType.F32, [t, heads * hd], MemoryCategory.Workspace);
                using var dk = DeviceTensor.Create(ctx, "dk", DType.F32, [t, kvHeads * hd], MemoryCategory.Workspace);
                using var dv = DeviceTensor.Create(ctx, "dv", DType.F32, [t, kvHeads * hd], MemoryCategory.Workspace);
                using var lse = DeviceTensor.Create(ctx, "lse", DType.F32, [1, heads, t], MemoryCategory.Workspace);
                using var delta = DeviceTensor.Create(ctx, "delta", DType.F32, [1, heads, t], MemoryCategory.Workspace);
                q.Upload<float>(Random(t * heads * hd, 11));
                k.Upload<float>(Random(t * kvHeads * hd, 12));
                v.Upload<float>(Random(t * kvHeads * hd, 13));
                dO.Upload<float>(Random(t * heads * hd, 14));
                double pairs = (double)t * (t + 1) / 2 * heads;
                string shape = $"T {t}, hd {hd}, {heads}:{kvHeads} heads";
                int runs = quick || t >= 8192 ? 1 : 3;
                foreach (var algorithm in algorithms)
                {
                    bool coop = algorithm == AttentionAlgorithm.FlashCoopMatrix;
                    string name = coop ? "flash, NV cooperative matrices" : algorithm.ToString().ToLowerInvariant();
                    double ofPeak = coop ? peak.CoopMatrixGflops!.Value : peak.FmaGflops;
                    string bound = coop ? "coopmat" : "compute";
                    double fwd = GpuTimer.MedianSeconds(ctx, () => Attention.Forward(q, k, v, o, lse, 1, t, 0, heads, kvHeads, hd, algorithm), runs);
                    double fwdGflops = 4.0 * hd * pairs / fwd / 1e9;
                    results.Add(new KernelResult($"attention forward ({name})", shape, fwd, fwdGflops, fwdGflops / ofPeak, bound, null));
                    double bwd = GpuTimer.MedianSeconds(ctx, () => Attention.Backward(q, k, v, o, lse, dO, dq, dk, dv, delta, 1, t, 0, heads, kvHeads, hd, algorithm), runs);
                    double bwdGflops = 10.0 * hd * pairs / bwd / 1e9;
                    results.Add(new KernelResult($"attention backward ({name})", shape, bwd, bwdGflops, bwdGflops / ofPeak, bound, null));
                }
            }
    }

    /// <summary>
    /// NF4+DQ fused forward (x·deq(W)ᵀ) and input gradient (dy·deq(W)) at K = N = 4096 for several M, next to the fp32
    /// matmul and the dequantize-then-matmul path. M = 1 is bandwidth-bound: its fraction is of the measured copy
    /// bandwidth over the packed weight bytes; larger M are compute-bound: fraction of the FMA peak.
    /// </summary>
    private static void RunQuantized(VulkanContext ctx, DevicePeak peak, bool quick, Action<string> log, List<KernelResult> results)
    {
        int dim = quick ? 1024 : 4096;
        int[] ms = quick ? [1, 16, 256] : [1, 16, 512, 2048];
        log($"quantizing a {dim}x{dim} weight to NF4+DQ...");
        var wf = Random(dim * dim, 7);
        for (int i = 0; i < wf.Length; i++) wf[i] *= 0.02f;
        var q = VkPeft.Quant.QuantizedLinearWeight.Bnb4Bit(wf, dim, dim);
        using var w = VkPeft.Runtime.Quant.DeviceQuantizedWeight.Upload(ctx, "bench.w.nf4dq", q);
        using var wF32 = DeviceTensor.Create(ctx, "bench.w.f32", DType.F32, [dim, dim], MemoryCategory.Workspace);
        wF32.Upload<float>(q.Dequantize());
        foreach (int m in ms)
        {
            log($"quantized kernels at M = {m}...");
            int runs = quick || m >= 512 ? 2 : 5;
            using var x = DeviceTensor.Create(ctx, "x", DType.F32, [m, dim], MemoryCategory.Workspace);
            using var y = DeviceTensor.Create(ctx, "y", DType.F32, [m, dim], MemoryCategory.Workspace);
            x.Upload<float>(Random(m * dim, m));
            double flops = 2.0 * m * dim * dim;
            string shape = $"{m}x{dim}x{dim}";
            bool bw = m == 1;
            double weightBytes = w.DeviceBytes;
            KernelResult Result(string kernel, double s, bool packed) => new(kernel, shape, s, flops / s / 1e9,
                bw ? (packed ? weightBytes : 4.0 * dim * dim) / s / 1e9 / peak.CopyGBps : flops / s / 1e9 / peak.FmaGflops,
                bw ? "memory" : "compute", null);
            double fwd = GpuTimer.MedianSeconds(ctx, () => QuantizedMatMul.Forward(x, w, y), runs);
            results.Add(Result("nf4-dq fused forward", fwd, true));
            double dx = GpuTimer.MedianSeconds(ctx, () => QuantizedMatMul.InputGrad(y, w, x), runs);
            results.Add(Result("nf4-dq fused input grad", dx, true));
            if (MatMul.Choose(ctx) == MatMulAlgorithm.SharedTiles && m > 1)
            {
                // Each shared-tiles path the device can run, side by side (Auto above picks one of them).
                var paths = new List<(string Name, bool Fp16, bool Coop)> { ("fp32 tiles", false, false) };
                if (ctx.Caps.ShaderFloat16) paths.Add(("fp16 weight tiles", true, false));
                if (QuantizedMatMul.CoopMatrixUnavailable(ctx.Caps) == null) paths.Add(("NV cooperative matrices", false, true));
                foreach (var (name, fp16, coop) in paths)
                {
                    double pf = GpuTimer.MedianSeconds(ctx, () => QuantizedMatMul.Forward(x, w, y, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: fp16, coopMatrix: coop), runs);
                    results.Add(Result($"nf4-dq fused forward, {name}", pf, true));
                    double pd = GpuTimer.MedianSeconds(ctx, () => QuantizedMatMul.InputGrad(y, w, x, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: fp16, coopMatrix: coop), runs);
                    results.Add(Result($"nf4-dq fused input grad, {name}", pd, true));
                }
            }
            double f32 = GpuTimer.MedianSeconds(ctx, () => MatMul.Run(x, wF32, y, transposeB: true), runs);
            results.Add(Result("fp32 matmul (same shape)", f32, false));
            using var deq = DeviceTensor.Create(ctx, "deq", DType.F32, [dim, dim], MemoryCategory.Workspace);
            double dqm = GpuTimer.MedianSeconds(ctx, () => { QuantizedMatMul.Dequantize(w, deq); MatMul.Run(x, deq, y, transposeB: true); }, runs);
            results.Add(Result("dequantize then fp32 matmul", dqm, false));
        }
    }

    /// <summary>
    /// LoRA's skinny products at rank 16 (2,048 tokens, dim 4,096; --quick: 512, 1,024): x·Aᵀ and dy·B (N = rank) and the
    /// weight gradients dA = dTᵀ·X and dB = dYᵀ·T, each on the device's own path, on the shared-tiles path as it chooses
    /// (skinny tiles, split-K) and on the shared-tiles path before split-K (square tiles, one slice). They are
    /// bandwidth-bound: the fraction is of the copy bandwidth over the bytes of the [tokens, dim] operand.
    /// </summary>
    private static void RunLoraProducts(VulkanContext ctx, DevicePeak peak, bool quick, Action<string> log, List<KernelResult> results)
    {
        int t = quick ? 512 : 2048, dim = quick ? 1024 : 4096;
        const int r = 16;
        log($"LoRA products at rank {r}, {t} tokens, dim {dim}...");
        using var big = DeviceTensor.Create(ctx, "x", DType.F32, [t, dim], MemoryCategory.Workspace);      // x or dy
        using var thin = DeviceTensor.Create(ctx, "t", DType.F32, [t, r], MemoryCategory.Workspace);       // t or dt
        using var a = DeviceTensor.Create(ctx, "lora_a", DType.F32, [r, dim], MemoryCategory.Workspace);
        using var b = DeviceTensor.Create(ctx, "lora_b", DType.F32, [dim, r], MemoryCategory.Workspace);
        big.Upload<float>(Random(t * dim, 21));
        thin.Upload<float>(Random(t * r, 22));
        a.Upload<float>(Random(r * dim, 23));
        b.Upload<float>(Random(dim * r, 24));
        var square = MatMulTiles.For(ctx.Caps, fp16B: false);
        var paths = new List<(string Name, MatMulAlgorithm Algorithm, MatMulTiles? Tiles, int SplitK)>
        {
            ("device's path", MatMulAlgorithm.Auto, null, 0),
            ("shared tiles, skinny + split-K", MatMulAlgorithm.SharedTiles, null, 0),
            ("shared tiles, before split-K", MatMulAlgorithm.SharedTiles, square, 1),
        };
        double bytes = 4.0 * t * dim, flops = 2.0 * t * dim * r;
        string shape = $"{t} tokens, {dim} -> rank {r}";
        int runs = quick ? 3 : 5;
        foreach (var (name, algorithm, tiles, splitK) in paths)
        {
            void Add(string kernel, Action run)
            {
                double s = GpuTimer.MedianSeconds(ctx, run, runs);
                results.Add(new KernelResult($"{kernel}, {name}", shape, s, flops / s / 1e9, bytes / s / 1e9 / peak.CopyGBps, "memory", null));
            }
            Add("LoRA x·Aᵀ", () => MatMul.Run(big, a, thin, transposeB: true, algorithm: algorithm, tiles: tiles, splitK: splitK));
            Add("LoRA dy·B", () => MatMul.Run(big, b, thin, transposeB: false, algorithm: algorithm, tiles: tiles, splitK: splitK));
            Add("LoRA dA = dTᵀ·X", () => MatMulTn.Run(thin, big, a, 1, 0, algorithm, splitK));
            Add("LoRA dB = dYᵀ·T", () => MatMulTn.Run(big, thin, b, 1, 0, algorithm, splitK));
        }
    }

    /// <summary>Seconds the float64 CPU reference needs for the same matmul, extrapolated from a slice of M rows.</summary>
    private static double CpuMatmulSeconds(int m, int k, int n)
    {
        int rows = Math.Min(m, 16);
        var a = Random(rows * k, 3);
        var b = Random(n * k, 4);
        double s = GpuTimer.MedianWallSeconds(() => CpuReference.MatMul(a, b, rows, n, k, true), 1);
        return s * m / rows;
    }

    public static void Print(DevicePeak peak, List<KernelResult> results, string device)
    {
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(device)}[/]: measured peak [bold]{peak.FmaGflops:F1} GFLOP/s[/] fp32 FMA, [bold]{peak.CopyGBps:F1} GB/s[/] copy bandwidth"
            + (peak.CoopMatrixGflops is { } cm ? $", [bold]{cm:F1} GFLOP/s[/] NV cooperative matrices (\"cm\": of that peak)" : ""));
        var t = new Table().AddColumn("kernel").AddColumn("shape M x K x N").AddColumn(new TableColumn("ms").RightAligned())
            .AddColumn(new TableColumn("GFLOP/s").RightAligned()).AddColumn(new TableColumn("of peak").RightAligned())
            .AddColumn(new TableColumn("vs CPU reference").RightAligned());
        foreach (var r in results)
            t.AddRow(Markup.Escape(r.Kernel), r.Shape, (r.Seconds * 1e3).ToString("F1", CultureInfo.InvariantCulture),
                r.Gflops.ToString("F1", CultureInfo.InvariantCulture), r.FractionOfPeak.ToString("P0", CultureInfo.InvariantCulture) + PeakMark(r),
                r.CpuSeconds is { } cs ? (cs / r.Seconds).ToString("F1", CultureInfo.InvariantCulture) + "x faster" : "-");
        AnsiConsole.Write(t);
    }

    /// <summary>Which peak a fraction is of: " bw" copy bandwidth, " cm" cooperative matrices, "" fp32 FMA.</summary>
    public static string PeakMark(KernelResult r) => r.Bound switch { "memory" => " bw", "coopmat" => " cm", _ => "" };

    public static JsonObject ToJson(DevicePeak peak, List<KernelResult> results, string device) => new()
    {
        ["device"] = device,
        ["fma_gflops"] = peak.FmaGflops,
        ["copy_gbps"] = peak.CopyGBps,
        ["coopmat_gflops"] = peak.CoopMatrixGflops,
        ["kernels"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
        {
            ["kernel"] = r.Kernel,
            ["shape"] = r.Shape,
            ["seconds"] = r.Seconds,
            ["gflops"] = r.Gflops,
            ["fraction_of_peak"] = r.FractionOfPeak,
            ["bound"] = r.Bound,
            ["cpu_reference_seconds"] = r.CpuSeconds,
        }).ToArray()),
    };

    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
