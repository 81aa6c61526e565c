// `./vkpeft bench memory`: real training steps on the device (the largest slice that fits), measured peak bytes per
// category next to the analytic model, whole-model figures (measured or extrapolated per layer), a table and an SVG.
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Reports;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public static class MemoryBench
{
    public static Command Create(Option<string?> device, Option<bool> json)
    {
        var model = new Option<string?>("--model") { Description = "Model path (its real weights are used when the whole model fits)" };
        var config = new Option<string?>("--config") { Description = $"Built-in shape with random weights: {string.Join(", ", ModelCatalog.Names)}" };
        var method = new Option<string>("--method") { Description = PeftMethods.Known, DefaultValueFactory = _ => "lora" };
        var quant = new Option<string?>("--quant") { Description = "Base format (default nf4-dq; int4 for qalora)" };
        var rank = new Option<int>("--rank") { Description = "LoRA rank", DefaultValueFactory = _ => 8 };
        var freezeA = new Option<bool>("--freeze-a") { Description = "LoRA-FA: A frozen (no A gradient or optimizer state)" };
        var targets = new Option<string>("--targets") { Description = "Linear layers to adapt", DefaultValueFactory = _ => "q,k,v,o,gate,up,down" };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step", DefaultValueFactory = _ => 1 };
        var ckpt = new Option<string?>("--checkpointing") { Description = "on or off (default: on above 200M linear parameters, as the trainer)" };
        var lossChunk = new Option<int>("--loss-chunk") { Description = "Rows of logits per cross-entropy chunk", DefaultValueFactory = _ => 128 };
        var quantEmb = new Option<string>("--quant-embeddings") { Description = "Embedding/classifier: none (fp32) or nf4-dq", DefaultValueFactory = _ => "none" };
        var offload = new Option<bool>("--offload-checkpoints") { Description = "Layer inputs saved for recomputation in host memory (implies checkpointing)" };
        var optHost = new Option<bool>("--optimizer-on-host") { Description = "AdamW m and v in host memory" };
        var steps = new Option<int>("--steps") { Description = "Steps to run (the first is a warm-up when more than one)", DefaultValueFactory = _ => 2 };
        var maxLayers = new Option<int>("--max-layers") { Description = "Most layers in a slice when the whole model does not fit", DefaultValueFactory = _ => 2 };
        var limit = new Option<string>("--limit") { Description = "Device bytes the benchmark may use (default 1.5GiB or 75% of the budget)", DefaultValueFactory = _ => "" };
        var svg = new Option<string?>("--svg") { Description = "Bar chart path (default out/bench/memory-<model>.svg)" };
        var cmd = new Command("memory", "Peak device memory per category of real training steps, against the analytic model")
        {
            model, config, method, quant, rank, freezeA, targets, seqLen, batch, ckpt, lossChunk, quantEmb, offload, optHost, steps, maxLayers, limit, svg,
        };
        cmd.SetAction(parse =>
        {
            string? path = parse.GetValue(model), name = parse.GetValue(config);
            if ((path == null) == (name == null)) throw new FormatException("give exactly one of --model PATH and --config NAME");
            LlamaWeights? real = null;
            LlamaConfig c;
            if (path != null)
            {
                var loaded = ModelLoader.Load(path);
                (c, real, name) = (loaded.Config, loaded.Weights, Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(path)));
            }
            else c = ModelCatalog.Get(name!);
            var setup = Setup(c, parse.GetValue(method)!, parse.GetValue(quant), parse.GetValue(rank), parse.GetValue(targets)!, parse.GetValue(batch),
                parse.GetValue(seqLen), parse.GetValue(ckpt)).WithFreezeA(parse.GetValue(freezeA));
            int rows = parse.GetValue(lossChunk);
            if (rows < 1) throw new FormatException($"--loss-chunk must be ≥ 1, got {rows}");
            var emb = parse.GetValue(quantEmb)!.ToLowerInvariant() switch
            {
                "none" or "fp32" => EmbeddingFormat.Fp32,
                "nf4-dq" => EmbeddingFormat.Nf4,
                var other => throw new FormatException($"--quant-embeddings: use none or nf4-dq, not '{other}'"),
            };
            bool off = parse.GetValue(offload);
            if (off && parse.GetValue(ckpt) is { } ck && ck.ToLowerInvariant() is "off" or "false")
                throw new FormatException("--offload-checkpoints needs checkpointing: drop --checkpointing off");
            setup = setup with
            {
                LogitRows = rows, Embeddings = emb, OffloadCheckpoints = off, Checkpointing = setup.Checkpointing || off, OptimizerOnHost = parse.GetValue(optHost),
            };
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)));
            setup = setup.OnDevice(ctx);
            string lim = parse.GetValue(limit)!;
            long bytes = lim.Length > 0 ? (long)ByteSize.Parse(lim, "--limit") : Math.Min(3L << 29, (long)ctx.Arena.Budget * 3 / 4);
            bool asJson = parse.GetValue(json);
            var r = MemoryBenchmark.Run(ctx, name!, setup, real, bytes, parse.GetValue(maxLayers), parse.GetValue(steps), m => { if (!asJson) Console.Error.WriteLine(m); });
            var svgPath = parse.GetValue(svg) ?? Path.Combine("out", "bench", $"memory-{name}.svg");
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(svgPath))!);
            Plots.MemoryBars(svgPath, [.. r.Reported.Where(kv => kv.Value > 0).Select(kv => (kv.Key.ToString().ToLowerInvariant(), (double)kv.Value))],
                $"{name}: peak {ByteSize.Format(r.PeakBytes)} ({(r.MeasuredWhole ? "measured" : "extrapolated from a measured slice")})");
            if (asJson) Console.WriteLine(MemoryBenchmark.ToJson(r, VkPeft.Cli.SettingFlags.Spell).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(r, svgPath);
            return 0;
        });
        return cmd;
    }

    public static TrainSetup Setup(LlamaConfig c, string method, string? quant, int rank, string targets, int batch, int seqLen, string? ckpt)
    {
        var m = PeftMethods.TryGet(method) ?? throw new FormatException($"--method: unknown method '{method}' (use {PeftMethods.Known})");
        long linear = MemoryModel.LayerLinears(c).Sum(l => (long)l.Out * l.In) * c.NLayers;
        bool checkpointing = ckpt?.ToLowerInvariant() switch
        {
            null => linear > VkPeft.Peft.Training.Trainer.AutoCheckpointingLinearParameters,
            "on" or "true" => true,
            "off" or "false" => false,
            var other => throw new FormatException($"--checkpointing: use on or off, not '{other}'"),
        };
        return TrainSetup.For(c, m, quant == null ? null : BaseQuant.Parse(quant), rank, AdapterConfig.ParseTargets(targets), seqLen) with
        {
            Batch = batch, Checkpointing = checkpointing,
        };
    }

    private static string F(long b) => ByteSize.Format(b);

    public static void Print(MemoryBenchResult r, string svgPath)
    {
        var inv = CultureInfo.InvariantCulture;
        var s = r.Full;
        AnsiConsole.MarkupLine(Markup.Escape($"{r.Model} on {r.Device}: {s.Method.ToString().ToLowerInvariant()}{(s.FreezeA ? " (A frozen, LoRA-FA)" : "")} r={s.Rank}, {s.Quant}, batch {s.Batch} × {s.SeqLen} tokens, checkpointing {(s.Checkpointing ? "on" : "off")}, logits in chunks of {s.LogitRows} rows, embedding/classifier {(s.Embeddings == EmbeddingFormat.Nf4 ? "nf4-dq" : "fp32")}{(s.OffloadCheckpoints ? ", layer inputs on the host" : "")}{(s.OptimizerOnHost ? ", AdamW state on the host" : "")}"));
        AnsiConsole.MarkupLine(Markup.Escape(r.Note + "."));
        string sliceName = r.Slice.Whole ? "measured" : $"measured slice ({r.Slice.Layers} layer{(r.Slice.Layers > 1 ? "s" : "")}, vocab {r.Slice.Vocab})";
        var t = new Table().AddColumn("category")
            .AddColumn(new TableColumn(Markup.Escape(sliceName)).RightAligned())
            .AddColumn(new TableColumn("analytic, same slice").RightAligned())
            .AddColumn(new TableColumn("slice error").RightAligned())
            .AddColumn(new TableColumn("analytic, whole model").RightAligned())
            .AddColumn(new TableColumn(r.Slice.Whole ? "whole model (measured)" : "whole model (extrapolated)").RightAligned());
        foreach (var cat in Enum.GetValues<MemoryCategory>())
        {
            long m = r.Measured.PeakByCategory[cat], a = r.SliceEstimate[cat];
            string err = a == 0 && m == 0 ? "-" : ((m - a) / (double)Math.Max(a, 1)).ToString("+0.0%;-0.0%;0.0%", inv);
            t.AddRow(cat.ToString().ToLowerInvariant(), F(m), F(a), err, F(r.FullEstimate[cat]), F(r.Reported[cat]));
        }
        t.AddRow("[bold]peak (live)[/]", F(r.Measured.PeakLiveBytes), F(r.SliceEstimate.TotalBytes), "", F(r.FullEstimate.TotalBytes), $"[bold]{F(r.PeakBytes)}[/]");
        if (r.FullEstimate.HostBytes > 0)
        {
            long hm = r.Measured.HostPeakByCategory.Values.Sum(), ha = r.SliceEstimate.HostBytes;
            t.AddRow("host memory (offloaded)", F(hm), F(ha), ha == 0 ? "-" : ((hm - ha) / (double)ha).ToString("+0.0%;-0.0%;0.0%", inv), F(r.FullEstimate.HostBytes),
                F(hm + r.FullEstimate.HostBytes - ha));
        }
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine(string.Create(inv, $"loading peaks at {F(r.FullEstimate.LoadPeakBytes)} (analytic: weights plus one fp32 weight being quantized)"));
        string extra = r.Slice.Whole ? "" : string.Create(inv, $"; whole model ≈ {r.FullModelTokensPerSecond:F2} (extrapolated by FLOPs)");
        AnsiConsole.MarkupLine(string.Create(inv, $"tokens/s: [bold]{r.MeasuredTokensPerSecond:F1}[/] measured ({(r.Slice.Whole ? "whole model" : "slice")}, {r.Measured.SecondsPerStep:F2} s per step incl. optimizer){extra}"));
        var cmp = new Table().AddColumn("variant (analytic, whole model)").AddColumn("runs here").AddColumn(new TableColumn("weights").RightAligned())
            .AddColumn(new TableColumn("trainable+grads+optimizer").RightAligned()).AddColumn(new TableColumn("activations+workspace").RightAligned()).AddColumn(new TableColumn("peak").RightAligned());
        foreach (var (name, avail, cats) in MemoryBenchmark.Comparisons(s))
            cmp.AddRow(Markup.Escape(name.Render(VkPeft.Cli.SettingFlags.Spell)), avail ? "yes" : "not available", F(cats[MemoryCategory.Weights]),
                F(cats[MemoryCategory.Trainable] + cats[MemoryCategory.Gradients] + cats[MemoryCategory.Optimizer]),
                F(cats[MemoryCategory.Activations] + cats[MemoryCategory.Workspace] + cats[MemoryCategory.Staging]), F(cats.Values.Sum()));
        AnsiConsole.Write(cmp);
        AnsiConsole.MarkupLine(Markup.Escape($"bar chart: {Path.GetFullPath(svgPath)}"));
    }
}
