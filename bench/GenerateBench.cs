// `./vkpeft bench generate`: greedy decode tokens/s (KV cache, one submission per token) and 64-token prefill tokens/s
// for stories260K and a TinyLlama-shaped nf4-dq slice, with the fraction of measured copy bandwidth the weights reach.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public sealed record GenerateRow(string Model, string Quant, int NewTokens, double DecodeTokensPerSecond, double PrefillTokensPerSecond,
    long LinearBytes, long WeightBytesPerToken, double LinearFraction, double WeightFraction);

public static class GenerateBench
{
    public static Command Create(Option<string?> device, Option<bool> json)
    {
        var stories = new Option<string?>("--stories") { Description = "stories260K.bin (default: the shared copy next to the repository)" };
        var layers = new Option<int>("--tiny-layers") { Description = "Layers of the TinyLlama-shaped slice", DefaultValueFactory = _ => 8 };
        var tokens = new Option<int>("--tokens") { Description = "Tokens to generate per run", DefaultValueFactory = _ => 200 };
        var cmd = new Command("generate", "Greedy generation and 64-token prefill tokens/s, and the bandwidth the weights reach") { stories, layers, tokens };
        cmd.SetAction(parse =>
        {
            bool asJson = parse.GetValue(json);
            void Log(string m) { if (!asJson) Console.Error.WriteLine(m); }
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)));
            Log("measuring copy bandwidth...");
            var peak = DevicePeaks.Measure(ctx, quick: true);
            var rows = new List<GenerateRow>();
            int n = parse.GetValue(tokens);
            var s = BenchModels.Stories(parse.GetValue(stories));
            rows.Add(Case(ctx, peak, s.Name, s.Config, s.Weights, BaseQuant.None, n, Log));
            rows.Add(Case(ctx, peak, s.Name, s.Config, s.Weights, BaseQuant.Parse("nf4-dq"), n, Log));
            var t = BenchModels.TinyLlama(parse.GetValue(layers));
            rows.Add(Case(ctx, peak, t.Name, t.Config, t.Weights, BaseQuant.Parse("nf4-dq"), Math.Min(n, 32), Log));
            if (asJson) Console.WriteLine(ToJson(rows, peak, ctx.Caps.Name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(rows, peak, ctx.Caps.Name);
            return 0;
        });
        return cmd;
    }

    private static GenerateRow Case(VulkanContext ctx, DevicePeak peak, string name, LlamaConfig c, LlamaWeights w, BaseQuant q, int newTokens, Action<string> log)
    {
        log($"{name}, {q}: loading...");
        using var model = DeviceLlama.Load(ctx, c, w, q);
        int prefill = Math.Min(64, c.MaxSeqLen - 1);
        int maxSeq = Math.Min(c.MaxSeqLen, Math.Max(prefill, newTokens + 1));
        using var runner = new LlamaRunner(model, 1, maxSeq, kvCache: true);
        var gen = new Generator(runner);
        var rng = new Random(3);
        int[] prompt = [.. Enumerable.Range(0, prefill).Select(_ => rng.Next(c.VocabSize))];
        var logits = new float[c.VocabSize];
        void Prefill()
        {
            runner.Ids.RowsView(0, prefill).Upload<int>(prompt);
            runner.Embed(prefill);
            runner.Layers(1, prefill, 0);
            runner.FinalNorm(prefill);
            runner.LogitsOf(prefill - 1, 1).Download<float>(logits);
        }
        log($"{name}, {q}: prefill of {prefill} tokens, then {newTokens} greedy tokens...");
        double prefillS = GpuTimer.MedianWallSeconds(Prefill, 3);
        int produced = 0;
        gen.Generate([prompt[0]], 4, new SamplingOptions());   // warm-up
        var sw = Stopwatch.StartNew();
        var outIds = gen.Generate([prompt[0]], newTokens, new SamplingOptions(), onToken: _ => produced++);
        double decodeS = sw.Elapsed.TotalSeconds;
        _ = outIds;
        // Per generated token the kernels read every linear weight once (packed), the classifier (fp32) and one embedding row.
        long linear = model.LinearBytes;
        long perToken = linear + model.Classifier.DeviceBytes + 4L * c.Dim;
        double tps = produced / decodeS;
        return new GenerateRow(name, q.Type, produced, tps, prefill / prefillS, linear, perToken,
            linear * tps / 1e9 / peak.CopyGBps, perToken * tps / 1e9 / peak.CopyGBps);
    }

    private static void Print(List<GenerateRow> rows, DevicePeak peak, string device)
    {
        var inv = CultureInfo.InvariantCulture;
        AnsiConsole.MarkupLine(Markup.Escape($"{device}: measured copy bandwidth {peak.CopyGBps:F1} GB/s; batch 1, greedy, KV cache"));
        var t = new Table().AddColumn("model").AddColumn("base").AddColumn(new TableColumn("decode tok/s").RightAligned())
            .AddColumn(new TableColumn("prefill (64) tok/s").RightAligned()).AddColumn(new TableColumn("packed linear bytes").RightAligned())
            .AddColumn(new TableColumn("of copy bw (linears)").RightAligned()).AddColumn(new TableColumn("of copy bw (all weights read)").RightAligned());
        foreach (var r in rows)
            t.AddRow(Markup.Escape(r.Model), r.Quant == "none" ? "fp32 (none)" : r.Quant, r.DecodeTokensPerSecond.ToString("F1", inv), r.PrefillTokensPerSecond.ToString("F1", inv),
                ByteSize.Format(r.LinearBytes), r.LinearFraction.ToString("P1", inv), r.WeightFraction.ToString("P1", inv));
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine("lavapipe goals for stories260K: ≥ 425 tok/s generation, ≥ 1,650 tok/s prefill.");
    }

    private static JsonObject ToJson(List<GenerateRow> rows, DevicePeak peak, string device) => new()
    {
        ["device"] = device,
        ["copy_gbps"] = peak.CopyGBps,
        ["cases"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject
        {
            ["model"] = r.Model, ["quant"] = r.Quant, ["new_tokens"] = r.NewTokens, ["decode_tokens_per_second"] = r.DecodeTokensPerSecond,
            ["prefill_tokens_per_second"] = r.PrefillTokensPerSecond, ["packed_linear_bytes"] = r.LinearBytes, ["weight_bytes_per_token"] = r.WeightBytesPerToken,
            ["fraction_of_copy_bandwidth_linears"] = r.LinearFraction, ["fraction_of_copy_bandwidth_all_weights"] = r.WeightFraction,
        }).ToArray()),
    };
}
