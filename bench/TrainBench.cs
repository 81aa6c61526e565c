// `./vkpeft bench train`: tokens/s of full training steps (forward, backward, AdamW) with LoRA r=16 on an nf4-dq base and
// on fp32 base weights (--quant none), for stories260K and a TinyLlama-1.1B-shaped slice, with the per-kernel profile;
// `--methods` adds stories260K rows (nf4-dq) for other PEFT methods, measured in the same run.
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public sealed record TrainBenchRow(string Model, string Method, string Quant, int Batch, int SeqLen, bool Checkpointing, double SecondsPerStep, double TokensPerSecond, long PeakBytes, string? Profile);

public static class TrainBench
{
    /// <summary>The bases each model is trained on: NF4+DQ and, for comparison, fp32.</summary>
    private static readonly string[] BaseQuants = ["nf4-dq", "none"];

    public static Command Create(Option<string?> device, Option<bool> json)
    {
        var stories = new Option<string?>("--stories") { Description = "stories260K.bin (default: the shared copy next to the repository)" };
        var layers = new Option<int>("--tiny-layers") { Description = "Layers of the TinyLlama-shaped slice", DefaultValueFactory = _ => 2 };
        var seq = new Option<int>("--tiny-seq-len") { Description = "Sequence length for the TinyLlama slice", DefaultValueFactory = _ => 128 };
        var steps = new Option<int>("--steps") { Description = "Steps per case (first is a warm-up)", DefaultValueFactory = _ => 3 };
        var profile = new Option<bool>("--no-profile") { Description = "Skip the per-kernel breakdown" };
        var methods = new Option<string>("--methods")
        {
            Description = "PEFT methods compared on stories260K (nf4-dq), comma-separated, e.g. lora,llama-adapter (LoRA always runs)",
            DefaultValueFactory = _ => "lora",
        };
        var cmd = new Command("train", "Training-step tokens/s (nf4-dq vs fp32 base) with the per-kernel breakdown") { stories, layers, seq, steps, profile, methods };
        cmd.SetAction(parse =>
        {
            bool asJson = parse.GetValue(json);
            void Log(string m) { if (!asJson) Console.Error.WriteLine(m); }
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)));
            var rows = new List<TrainBenchRow>();
            bool prof = !parse.GetValue(profile);
            int n = Math.Max(1, parse.GetValue(steps));
            var others = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(PeftMethods.Get).Where(m => m != PeftMethod.Lora).Distinct().ToArray();
            var s = BenchModels.Stories(parse.GetValue(stories));
            foreach (var q in BaseQuants)
                rows.Add(Case(ctx, s.Name, s.Config, s.Weights, q, 8, 128, false, n, prof, Log));
            foreach (var m in others)
                rows.Add(Case(ctx, s.Name, s.Config, s.Weights, BaseQuants[0], 8, 128, false, n, prof, Log, m));
            var t = BenchModels.TinyLlama(parse.GetValue(layers));
            foreach (var q in BaseQuants)
                rows.Add(Case(ctx, t.Name, t.Config, t.Weights, q, 1, parse.GetValue(seq), true, n, prof, Log));
            if (asJson) Console.WriteLine(ToJson(rows, ctx.Caps.Name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(rows, ctx.Caps.Name);
            return 0;
        });
        return cmd;
    }

    private static TrainBenchRow Case(VulkanContext ctx, string name, LlamaConfig c, LlamaWeights w, string quant, int batch, int seqLen, bool ckpt, int steps, bool profile,
        Action<string> log, PeftMethod? method = null)
    {
        method ??= PeftMethod.Lora;
        var setup = new TrainSetup { Config = c, Method = method, Quant = BaseQuant.Parse(quant), Rank = 16, Batch = batch, SeqLen = seqLen, Checkpointing = ckpt };
        log($"{name}, {quant}: {batch} × {seqLen} tokens, {MethodLabel(method)}...");
        var r = StepMeasurement.Run(ctx, setup, w, steps, profile, log);
        return new TrainBenchRow(name, method.CliName, quant, batch, seqLen, ckpt, r.SecondsPerStep, batch * seqLen / r.SecondsPerStep, r.PeakLiveBytes, r.Profile);
    }

    private static string MethodLabel(PeftMethod m) => m == PeftMethod.Lora ? "LoRA r=16 on all linears" : $"{m.CliName} (its defaults)";

    private static void Print(List<TrainBenchRow> rows, string device)
    {
        var inv = CultureInfo.InvariantCulture;
        AnsiConsole.MarkupLine(Markup.Escape($"{device}: one training step = forward + backward + gradient norm + AdamW; LoRA r=16 on q,k,v,o,gate,up,down unless the method says otherwise"));
        var t = new Table().AddColumn("model").AddColumn("method").AddColumn("base").AddColumn("tokens").AddColumn("checkpointing")
            .AddColumn(new TableColumn("s/step").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned()).AddColumn(new TableColumn("peak").RightAligned());
        foreach (var r in rows)
            t.AddRow(Markup.Escape(r.Model), r.Method, r.Quant == "none" ? "fp32 (none)" : r.Quant, $"{r.Batch} × {r.SeqLen}", r.Checkpointing ? "on" : "off",
                r.SecondsPerStep.ToString("F3", inv), r.TokensPerSecond.ToString("F1", inv), ByteSize.Format(r.PeakBytes));
        AnsiConsole.Write(t);
        foreach (var r in rows.Where(r => r.Profile != null))
        {
            AnsiConsole.MarkupLine(Markup.Escape($"\nper-kernel GPU time, {r.Model}, {r.Method}, {r.Quant} (one step):"));
            Console.WriteLine(string.Join('\n', r.Profile!.Split('\n').Take(16)));
        }
    }

    private static JsonObject ToJson(List<TrainBenchRow> rows, string device) => new()
    {
        ["device"] = device,
        ["cases"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject
        {
            ["model"] = r.Model, ["method"] = r.Method, ["quant"] = r.Quant, ["batch"] = r.Batch, ["seq_len"] = r.SeqLen, ["checkpointing"] = r.Checkpointing,
            ["seconds_per_step"] = r.SecondsPerStep, ["tokens_per_second"] = r.TokensPerSecond, ["peak_bytes"] = r.PeakBytes, ["profile"] = r.Profile,
        }).ToArray()),
    };
}
