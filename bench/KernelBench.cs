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
    public static (DevicePeak Peak, List<KernelResult> Results) Run(VulkanContext ctx, bool quick, Action<string> log)
    {
        log("measuring device peaks (FMA throughput, copy bandwidth)...");
        var peak = DevicePeaks.Measure(ctx, quick);
        log($"peak: {peak.FmaGflops:F1} GFLOP/s fp32 FMA, {peak.CopyGBps:F1} GB/s copy");
        var results = new List<KernelResult>();
        (int M, int K, int N)[] shapes = quick ? [(256, 1024, 1024), (512, 512, 512)] : [(512, 4096, 4096), (2048, 2048, 2048)];
        foreach (var (m, k, n) in shapes)
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
        return (peak, results);
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
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(device)}[/]: measured peak [bold]{peak.FmaGflops:F1} GFLOP/s[/] fp32 FMA, [bold]{peak.CopyGBps:F1} GB/s[/] copy bandwidth");
        var t = new Table().AddColumn("kernel").AddColumn("shape M x K x N").AddColumn(new TableColumn("ms").RightAligned())
            .AddColumn(new TableColumn("GFLOP/s").RightAligned()).AddColumn(new TableColumn("of peak").RightAligned())
            .AddColumn(new TableColumn("vs CPU reference").RightAligned());
        foreach (var r in results)
            t.AddRow(Markup.Escape(r.Kernel), r.Shape, (r.Seconds * 1e3).ToString("F1", CultureInfo.InvariantCulture),
                r.Gflops.ToString("F1", CultureInfo.InvariantCulture), r.FractionOfPeak.ToString("P0", CultureInfo.InvariantCulture) + (r.Bound == "memory" ? " bw" : ""),
                r.CpuSeconds is { } cs ? (cs / r.Seconds).ToString("F1", CultureInfo.InvariantCulture) + "x faster" : "-");
        AnsiConsole.Write(t);
    }

    public static JsonObject ToJson(DevicePeak peak, List<KernelResult> results, string device) => new()
    {
        ["device"] = device,
        ["fma_gflops"] = peak.FmaGflops,
        ["copy_gbps"] = peak.CopyGBps,
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
