// `./vkpeft bench train`: tokens/s of full training steps (forward, backward, AdamW): each method of --methods on an
// nf4-dq stories260K (LoRA r=16 the baseline of the speed ratios), and LoRA r=16 on nf4-dq against fp32 base weights
// (--quant none) for stories260K and a TinyLlama-1.1B-shaped slice, with the per-kernel profile.
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

public sealed record TrainBenchRow(string Method, long TrainableParameters, string Model, string Quant, int Batch, int SeqLen, bool Checkpointing, double SecondsPerStep, double TokensPerSecond, long PeakBytes, string? Profile,
    double DispatchesPerStep, double SubmitsPerStep, double WaitsPerStep);

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
            Description = "Methods timed on stories260K (names as in `vkpeft compare`; lora is always the first, the baseline)",
            DefaultValueFactory = _ => "lora,lora-fa,dora,ia3,adapter,llama-adapter,prompt,prefix,bias,norm",
        };
        var staged = new Option<bool>("--staged") { Description = "Transfers through staging memory even where device memory is host-mapped (as on a discrete GPU)" };
        var noRing = new Option<bool>("--no-staging-ring") { Description = "A fresh staging buffer and host waits per transfer (the path before the staging ring), for comparison" };
        var hostReads = new Option<bool>("--host-reads")
        {
            Description = "Also time stories260K LoRA with the loss and gradient norm read back within each step and the clip scale formed on the host (the path before device-side clipping), for comparison",
        };
        var models = new Option<string[]>("--models") { Description = "Models to train: stories, tinyllama (default: both)", AllowMultipleArgumentsPerToken = true };
        models.AcceptOnlyFromAmong("stories", "tinyllama");
        var cmd = new Command("train", "Training-step tokens/s per method and nf4-dq vs fp32 base, with the per-kernel breakdown") { stories, layers, seq, steps, profile, methods, staged, noRing, hostReads, models };
        cmd.SetAction(parse =>
        {
            bool asJson = parse.GetValue(json);
            void Log(string m) { if (!asJson) Console.Error.WriteLine(m); }
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)) with
                { DisableHostMappedMemory = parse.GetValue(staged), StagingRing = !parse.GetValue(noRing) });
            var rows = new List<TrainBenchRow>();
            bool prof = !parse.GetValue(profile);
            int n = Math.Max(1, parse.GetValue(steps));
            var specs = MethodSpec.ParseList(parse.GetValue(methods)!).ToList();
            specs.RemoveAll(m => m.Label == "lora");
            specs.Insert(0, MethodSpec.Parse("lora"));
            var pick = parse.GetValue(models) is { Length: > 0 } chosen ? chosen : ["stories", "tinyllama"];
            if (pick.Contains("stories"))
            {
                var s = BenchModels.Stories(parse.GetValue(stories));
                foreach (var m in specs)
                {
                    rows.Add(Case(ctx, s.Name, s.Config, s.Weights, m, BaseQuants[0], 8, 128, false, n, prof, Log));
                    if (m.Label == "lora" && parse.GetValue(hostReads))
                        rows.Add(Case(ctx, s.Name, s.Config, s.Weights, m, BaseQuants[0], 8, 128, false, n, prof, Log, hostReads: true));
                }
                rows.Add(Case(ctx, s.Name, s.Config, s.Weights, specs[0], BaseQuants[1], 8, 128, false, n, prof, Log));
            }
            if (pick.Contains("tinyllama"))
            {
                var t = BenchModels.TinyLlama(parse.GetValue(layers));
                foreach (var q in BaseQuants)
                    rows.Add(Case(ctx, t.Name, t.Config, t.Weights, specs[0], q, 1, parse.GetValue(seq), true, n, prof, Log));
            }
            if (asJson) Console.WriteLine(ToJson(rows, ctx.Caps.Name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(rows, ctx.Caps.Name);
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// Times <paramref name="method"/> (r=16 where it has a rank, its default targets — all linears for LoRA) on
    /// <paramref name="quant"/>.
    /// </summary>
    internal static TrainBenchRow Case(VulkanContext ctx, string name, LlamaConfig c, LlamaWeights w, MethodSpec method, string quant, int batch, int seqLen, bool ckpt,
        int steps, bool profile, Action<string> log, bool hostReads = false)
    {
        var setup = TrainSetup.For(c, method.Method, BaseQuant.Parse(quant), 16, method.Method.DefaultTrainTargets ?? Enum.GetValues<TargetModule>(), seqLen) with
        {
            Batch = batch, Checkpointing = ckpt, Variant = method.Switches.Count > 0 ? method.Apply : null,
        };
        var adapter = setup.ToAdapterConfig();
        setup = adapter.Method.SetupFor(setup, adapter);   // the variant's knobs (LoRA-FA's frozen A) in the memory terms too
        log($"{name}, {quant}: {batch} × {seqLen} tokens, {method.Label}...");
        var r = StepMeasurement.Run(ctx, setup, w, steps, profile, log, timingOnly: true, hostReads);
        return new TrainBenchRow(hostReads ? method.Label + " (host reads)" : method.Label, adapter.Method.Parameters(c, adapter).Where(p => !p.Frozen).Sum(p => p.Count), name, quant, batch, seqLen, ckpt, r.SecondsPerStep, batch * seqLen / r.SecondsPerStep,
            r.PeakLiveBytes, r.Profile, r.DispatchesPerStep, r.SubmitsPerStep, r.WaitsPerStep);
    }

    private static void Print(List<TrainBenchRow> rows, string device)
    {
        var inv = CultureInfo.InvariantCulture;
        AnsiConsole.MarkupLine(Markup.Escape($"{device}: one training step = forward + backward + gradient norm + AdamW; LoRA r=16 on q,k,v,o,gate,up,down, other methods with their default targets (r=16 where they have a rank)"));
        var t = new Table().AddColumn("model").AddColumn("method").AddColumn(new TableColumn("trained").RightAligned()).AddColumn("base").AddColumn("tokens").AddColumn("checkpointing")
            .AddColumn(new TableColumn("s/step").RightAligned()).AddColumn(new TableColumn("tokens/s").RightAligned()).AddColumn(new TableColumn("vs lora").RightAligned())
            .AddColumn(new TableColumn("peak").RightAligned()).AddColumn(new TableColumn("dispatches/step").RightAligned())
            .AddColumn(new TableColumn("submits/step").RightAligned()).AddColumn(new TableColumn("host waits/step").RightAligned());
        foreach (var r in rows)
        {
            var lora = rows.First(x => x.Model == r.Model && x.Quant == r.Quant && x.Method == "lora");
            t.AddRow(Markup.Escape(r.Model), Markup.Escape(r.Method), r.TrainableParameters.ToString("N0", inv), r.Quant == "none" ? "fp32 (none)" : r.Quant, $"{r.Batch} × {r.SeqLen}",
                r.Checkpointing ? "on" : "off", r.SecondsPerStep.ToString("F3", inv), r.TokensPerSecond.ToString("F1", inv),
                (r.TokensPerSecond / lora.TokensPerSecond).ToString("F2", inv) + "×", ByteSize.Format(r.PeakBytes),
                r.DispatchesPerStep.ToString("F0", inv), r.SubmitsPerStep.ToString("F0", inv), r.WaitsPerStep.ToString("F0", inv));
        }
        AnsiConsole.Write(t);
        foreach (var r in rows.Where(r => r.Profile != null))
        {
            AnsiConsole.MarkupLine(Markup.Escape($"\nper-kernel GPU time, {r.Model}, {r.Method}, {r.Quant} (one step):"));
            Console.WriteLine(string.Join('\n', r.Profile!.Split('\n').Take(16)));
        }
    }

    internal static JsonObject ToJson(List<TrainBenchRow> rows, string device) => new()
    {
        ["device"] = device,
        ["cases"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject
        {
            ["model"] = r.Model, ["method"] = r.Method, ["trainable_parameters"] = r.TrainableParameters, ["quant"] = r.Quant, ["batch"] = r.Batch, ["seq_len"] = r.SeqLen, ["checkpointing"] = r.Checkpointing,
            ["seconds_per_step"] = r.SecondsPerStep, ["tokens_per_second"] = r.TokensPerSecond, ["peak_bytes"] = r.PeakBytes, ["profile"] = r.Profile,
            ["dispatches_per_step"] = r.DispatchesPerStep, ["submits_per_step"] = r.SubmitsPerStep, ["host_waits_per_step"] = r.WaitsPerStep,
        }).ToArray()),
    };
}
