// `bench gpu-report --out DIR [--quick]`: everything a GPU run should tell in one command — the device and the kernel
// path each op uses (first-use self-checks included), GPU-vs-CPU checks of every GPU kernel path, the kernel benchmarks
// (peaks, matmul paths, fused 4-bit paths, attention) and training steps (stories260K, a TinyLlama-shaped slice at
// several token counts, one Llama-3.1-8B-shaped layer at 2,048 tokens) — written to DIR/gpu-report.json and
// DIR/gpu-report.md after every section, so a run cut short still leaves what it measured.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public static class GpuReport
{
    public static Command Create(Option<string?> device, Option<bool> quick)
    {
        var outDir = new Option<string>("--out") { Description = "Folder for gpu-report.json and gpu-report.md", Required = true };
        var stories = new Option<string?>("--stories") { Description = "stories260K.bin (default: the shared copy next to the repository, else random weights)" };
        var skipLlama = new Option<bool>("--no-llama8b") { Description = "Leave out the Llama-3.1-8B-shaped layer" };
        var sections = new Option<string[]>("--sections") { Description = "Sections to run: " + string.Join(", ", Sections) + " (default: all)", AllowMultipleArgumentsPerToken = true };
        sections.AcceptOnlyFromAmong(Sections);
        var cmd = new Command("gpu-report", "Device, kernel paths, GPU-vs-CPU kernel checks, kernel and training benchmarks: one JSON and one markdown table")
            { outDir, stories, skipLlama, sections };
        cmd.SetAction(parse =>
        {
            var dir = parse.GetValue(outDir)!;
            try { Directory.CreateDirectory(dir); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new FormatException($"--out '{dir}': {e.Message}"); }
            bool q = parse.GetValue(quick);
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)));
            var pick = parse.GetValue(sections) is { Length: > 0 } p ? p : Sections;
            return Run(ctx, dir, q, parse.GetValue(stories), !q && !parse.GetValue(skipLlama), pick);
        });
        return cmd;
    }

    private static readonly string[] Sections = ["device", "checks", "kernels", "train"];

    private static int Run(VulkanContext ctx, string dir, bool quick, string? storiesPath, bool llama8b, string[] sections)
    {
        var report = new JsonObject { ["quick"] = quick, ["started_utc"] = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture) };
        var md = new StringBuilder();
        var total = Stopwatch.StartNew();
        bool failed = false;
        static void Log(string m) => Console.Error.WriteLine(m);

        void Section(string name, Func<JsonNode> run)
        {
            if (!sections.Contains(name.StartsWith("train", StringComparison.Ordinal) ? "train" : name)) return;
            Log($"== {name}");
            var sw = Stopwatch.StartNew();
            JsonNode node;
            try { node = run(); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // One section failing (a device lost, a missing kernel) still leaves the others in the report.
                failed = true;
                node = new JsonObject { ["error"] = $"{e.GetType().Name}: {e.Message}" };
                md.AppendLine(CultureInfo.InvariantCulture, $"\n## {name}\n\n**failed**: {e.GetType().Name}: {e.Message}");
                Log($"{name} failed: {e}");
            }
            report[name] = node;
            report["seconds_" + name] = sw.Elapsed.TotalSeconds;
            report["seconds_total"] = total.Elapsed.TotalSeconds;
            Write(dir, report, md);
        }

        Section("device", () =>
        {
            var node = DeviceReport.Describe(ctx, VkPeft.Cli.SettingFlags.Spell);
            md.AppendLine(CultureInfo.InvariantCulture, $"# vkpeft GPU report: {ctx.Caps.Name}\n\n{ctx.Caps.Kind}, Vulkan {ctx.Caps.ApiVersion}, driver {ctx.Caps.DriverName} {ctx.Caps.DriverInfo}; subgroup {ctx.Caps.SubgroupSize}, shaderFloat16 {ctx.Caps.ShaderFloat16}, NV cooperative matrices: {ctx.Caps.CooperativeMatricesNV.Length} shapes\n");
            md.AppendLine("| op | kernel path | why |\n|---|---|---|");
            foreach (var k in KernelPathReport.Describe(ctx)) md.AppendLine(CultureInfo.InvariantCulture, $"| {k.Op} | {k.Path} | {k.Explain(VkPeft.Cli.SettingFlags.Spell)} |");
            return node;
        });
        Section("checks", () =>
        {
            var checks = GpuChecks.Run(ctx, quick, Log);
            int bad = checks.Count(c => !c.Passed);
            failed |= bad > 0;
            md.AppendLine(CultureInfo.InvariantCulture, $"\n## GPU-vs-CPU kernel checks: {checks.Count - bad} of {checks.Count} pass\n\n| kernel | path | shape | worst error / bound | result |\n|---|---|---|---:|---|");
            foreach (var c in checks)
                md.AppendLine(CultureInfo.InvariantCulture, $"| {c.Kernel} | {c.Path} | {c.Shape} | {c.WorstErrorOverBound:F3} | {(c.Passed ? "ok" : "**FAIL** " + c.Failure)} |");
            return new JsonObject
            {
                ["passed"] = checks.Count - bad,
                ["failed"] = bad,
                ["cases"] = new JsonArray(checks.Select(c => (JsonNode)new JsonObject
                {
                    ["kernel"] = c.Kernel, ["path"] = c.Path, ["shape"] = c.Shape, ["passed"] = c.Passed,
                    ["worst_error_over_bound"] = double.IsFinite(c.WorstErrorOverBound) ? c.WorstErrorOverBound : null, ["failure"] = c.Failure,
                }).ToArray()),
            };
        });
        Section("kernels", () =>
        {
            var (peak, results) = KernelBench.Run(ctx, quick, Log);
            string coop = peak.CoopMatrixGflops is { } cm ? $", {cm:F0} GFLOP/s NV cooperative matrices (cm)" : "";
            md.AppendLine(CultureInfo.InvariantCulture, $"\n## Kernels: peak {peak.FmaGflops:F0} GFLOP/s fp32 FMA, {peak.CopyGBps:F0} GB/s copy (bw){coop}\n\n| kernel | shape | ms | GFLOP/s | of peak |\n|---|---|---:|---:|---:|");
            foreach (var r in results)
                md.AppendLine(CultureInfo.InvariantCulture, $"| {r.Kernel} | {r.Shape} | {r.Seconds * 1e3:F2} | {r.Gflops:F1} | {r.FractionOfPeak:P0}{KernelBench.PeakMark(r)} |");
            return KernelBench.ToJson(peak, results, ctx.Caps.Name);
        });
        var rows = new List<TrainBenchRow>();
        var lora = MethodSpec.Parse("lora");
        void TrainSection(string name, Action add)
        {
            Section(name, () =>
            {
                int before = rows.Count;
                add();
                md.AppendLine(CultureInfo.InvariantCulture, $"\n## {name}: LoRA r=16 on all seven linears, NF4+DQ base\n\n| model | tokens | s/step | tokens/s | dispatches/step | submits/step | host waits/step |\n|---|---|---:|---:|---:|---:|---:|");
                foreach (var r in rows.Skip(before))
                    md.AppendLine(CultureInfo.InvariantCulture, $"| {r.Model} | {r.Batch} × {r.SeqLen} | {r.SecondsPerStep:F3} | {r.TokensPerSecond:F0} | {r.DispatchesPerStep:F0} | {r.SubmitsPerStep:F0} | {r.WaitsPerStep:F0} |");
                return TrainBench.ToJson(rows.Skip(before).ToList(), ctx.Caps.Name);
            });
        }
        TrainSection("train", () =>
        {
            var s = BenchModels.Stories(storiesPath);
            rows.Add(TrainBench.Case(ctx, s.Name, s.Config, s.Weights, lora, "nf4-dq", 8, 128, false, 3, true, Log));
            var t = BenchModels.TinyLlama(2);
            int[] tokenCounts = quick ? [128, 512] : [128, 512, 2048];
            foreach (int tokens in tokenCounts)
                rows.Add(TrainBench.Case(ctx, t.Name, t.Config, t.Weights, lora, "nf4-dq", 1, tokens, true, 3, tokens == 512, Log));
        });
        if (llama8b)
            TrainSection("train_llama8b_layer", () =>
            {
                var c = ModelCatalog.Slice(ModelCatalog.Get("llama-3.1-8b"), 1);
                rows.Add(TrainBench.Case(ctx, "llama-3.1-8b slice: 1 of 32 layers (random)", c, ModelCatalog.RandomWeights(c), lora, "nf4-dq", 1, 2048, true, 2, true, Log));
            });
        report["seconds_total"] = total.Elapsed.TotalSeconds;
        report["all_checks_passed"] = !failed;
        Write(dir, report, md);
        Log($"wrote {Path.Combine(dir, "gpu-report.json")} and gpu-report.md in {total.Elapsed.TotalSeconds:F0} s{(failed ? " (some checks or sections FAILED)" : "")}");
        return failed ? 1 : 0;
    }

    /// <summary>Writes both files through a temporary name and a rename, so a reader never sees half a report.</summary>
    private static void Write(string dir, JsonObject report, StringBuilder md)
    {
        foreach (var (name, text) in new[] { ("gpu-report.json", report.ToJsonString(new JsonSerializerOptions { WriteIndented = true })), ("gpu-report.md", md.ToString()) })
        {
            var path = Path.Combine(dir, name);
            File.WriteAllText(path + ".tmp", text);
            File.Move(path + ".tmp", path, overwrite: true);
        }
    }
}
