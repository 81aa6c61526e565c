// `vkpeft plan`: from the analytic memory model, the longest sequence and the largest batch a model trains with in a
// memory budget, and which switches (checkpointing, chunked loss, …) that takes; --json for scripts.
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class PlanCommand
{
    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = $"Built-in model shape: {string.Join(", ", ModelCatalog.Names)}" };
        var model = new Option<string?>("--model") { Description = "Model path (HF folder, .gguf, llama2.c .bin); only its configuration is read" };
        var memory = new Option<string>("--memory") { Description = "Device memory to plan for, e.g. 8GiB", Required = true };
        var method = new Option<string>("--method") { Description = PeftMethods.Known, DefaultValueFactory = _ => "lora" };
        var quant = new Option<string?>("--quant") { Description = "Base format: none, nf4, nf4-dq, fp4, fp4-dq, int4 (default nf4-dq; int4 for qalora)" };
        var rank = new Option<int>("--rank") { Description = "LoRA rank r", DefaultValueFactory = _ => 8 };
        var freezeA = new Option<bool>("--freeze-a") { Description = "LoRA-FA: A frozen at its initialization (no A gradient or optimizer state)" };
        var targets = new Option<string>("--targets") { Description = "Linear layers to adapt", DefaultValueFactory = _ => "q,k,v,o,gate,up,down" };
        var seqLen = new Option<int>("--seq-len") { Description = "Sequence length for the batch search", DefaultValueFactory = _ => 2048 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var check = new Option<bool>("--check") { Description = "Prove the longest plan: train a random-weight model with it on the device under the budget" };
        var checkLayers = new Option<int?>("--check-layers") { Description = "Layers to run in --check (default all; fewer extrapolate the rest from the model)" };
        var checkSteps = new Option<int>("--check-steps") { Description = "Training steps in --check", DefaultValueFactory = _ => 1 };
        var cmd = new Command("plan", "Largest sequence length and batch that fit a memory budget (analytic memory model)")
        {
            config, model, memory, method, quant, rank, freezeA, targets, seqLen, json, check, checkLayers, checkSteps,
        };
        cmd.SetAction(parse =>
        {
            var (name, c) = Resolve(parse.GetValue(config), parse.GetValue(model));
            var setup = Setup(c, parse.GetValue(method)!, parse.GetValue(quant), parse.GetValue(rank), parse.GetValue(targets)!, parse.GetValue(seqLen))
                .WithFreezeA(parse.GetValue(freezeA));
            long budget = (long)ByteSize.Parse(parse.GetValue(memory)!, "--memory");
            var plan = FitPlanner.Make(setup, budget);
            bool asJson = parse.GetValue(json);
            var obj = FitPlanner.ToJson(plan, name, SettingFlags.TrainFlags);
            if (!asJson) Print(plan, name);
            int exit = 0;
            if (parse.GetValue(check))
            {
                int steps = parse.GetValue(checkSteps);
                if (steps < 1) throw new CliUsageException($"--check-steps must be ≥ 1, got {steps}");
                if (parse.GetValue(checkLayers) is < 1) throw new CliUsageException($"--check-layers must be ≥ 1, got {parse.GetValue(checkLayers)}");
                if (plan.MaxSeq == null) throw new CliUsageException("--check: nothing fits, so there is no plan to check");
                var dir = Directory.CreateTempSubdirectory("vkpeft-plan-check-").FullName;
                try
                {
                    var rt = CliApp.RuntimeOptionsFrom(parse);   // --device, --validation; the budget is the plan's
                    var r = PlanCheck.Run(plan, parse.GetValue(checkLayers), steps, rt, dir, m => Console.Error.WriteLine(m),
                        s => Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"step {s.Step}: loss {s.Loss:F4}, {s.TokensPerSecond:F1} tokens/s")));
                    obj["check"] = CheckJson(r);
                    if (!asJson) PrintCheck(r);
                    exit = r.Honoured ? 0 : 1;
                }
                finally { Directory.Delete(dir, recursive: true); }
            }
            if (asJson) Console.WriteLine(obj.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return exit;
        });
        return cmd;
    }

    public static (string Name, LlamaConfig Config) Resolve(string? config, string? model)
    {
        if ((config == null) == (model == null)) throw new CliUsageException("give exactly one of --config NAME and --model PATH");
        if (config != null) return (config, ModelCatalog.Get(config));
        if (!File.Exists(model) && !Directory.Exists(model)) throw new FileNotFoundException($"--model: '{model}' does not exist");
        return (Path.GetFileName(Path.TrimEndingDirectorySeparator(model!)), ModelConfigReader.Read(model!));
    }

    public static TrainSetup Setup(LlamaConfig c, string method, string? quant, int rank, string targets, int seqLen)
    {
        var m = MethodCliOptions.Parse(method);
        if (rank < 1) throw new CliUsageException($"--rank must be ≥ 1, got {rank}");
        if (seqLen < 2) throw new CliUsageException($"--seq-len must be ≥ 2, got {seqLen}");
        return TrainSetup.For(c, m, quant == null ? null : BaseQuant.Parse(quant), rank, AdapterConfig.ParseTargets(targets), seqLen);
    }

    private static System.Text.Json.Nodes.JsonObject CheckJson(PlanCheckResult r) => new()
    {
        ["honoured"] = r.Honoured,
        ["seq_len"] = r.Full.SeqLen,
        ["layers_run"] = r.Layers,
        ["layers"] = r.Full.Config.NLayers,
        ["vocab_run"] = r.Vocab,
        ["vocab"] = r.Full.Config.VocabSize,
        ["whole_model"] = r.WholeModel,
        ["budget_bytes"] = r.Budget,
        ["slice_budget_bytes"] = r.SliceBudget,
        ["measured_peak_reserved_bytes"] = r.MeasuredReservedBytes,
        ["measured_peak_live_bytes"] = r.MeasuredLiveBytes,
        ["measured_categories"] = new System.Text.Json.Nodes.JsonObject(r.MeasuredByCategory.Select(kv =>
            KeyValuePair.Create(kv.Key.ToString().ToLowerInvariant(), (System.Text.Json.Nodes.JsonNode?)kv.Value))),
        ["measured_host_bytes"] = r.MeasuredHostBytes,
        ["modelled_slice_bytes"] = r.ModelledSliceBytes,
        ["left_out_bytes"] = r.LeftOutBytes,
        ["extrapolated_peak_bytes"] = r.ExtrapolatedBytes,
        ["tokens_per_second"] = r.TokensPerSecond,
        ["seconds_per_step"] = r.SecondsPerStep,
        ["final_loss"] = r.FinalLoss,
    };

    private static void PrintCheck(PlanCheckResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        var t = new Table().AddColumn("check").AddColumn(new TableColumn("bytes").RightAligned()).AddColumn("");
        string F(long b) => ByteSize.Format(b);
        t.AddRow("budget for this run", F(r.SliceBudget), r.WholeModel ? "the whole model ran" : $"{r.Layers} of {r.Full.Config.NLayers} layers, vocabulary {r.Vocab} of {r.Full.Config.VocabSize} ran; {F(r.LeftOutBytes)} modelled for the rest");
        t.AddRow("measured device peak (reserved blocks)", F(r.MeasuredReservedBytes), r.MeasuredReservedBytes <= r.SliceBudget ? "[green]within[/]" : "[red]over[/]");
        t.AddRow("measured device peak (live tensors)", F(r.MeasuredLiveBytes), string.Create(inv, $"model: {F(r.ModelledSliceBytes)}"));
        foreach (var (cat, b) in r.MeasuredByCategory.Where(kv => kv.Value > 0)) t.AddRow($"  {cat.ToString().ToLowerInvariant()}", F(b), "");
        t.AddRow("measured host memory (offloaded)", F(r.MeasuredHostBytes), "");
        t.AddRow("whole model (measured + left out)", F(r.ExtrapolatedBytes), r.ExtrapolatedBytes <= r.Budget ? $"[green]within {F(r.Budget)}[/]" : $"[red]over {F(r.Budget)}[/]");
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine(string.Create(inv, $"{r.Full.SeqLen} tokens per step, {r.SecondsPerStep:F1} s per step ({r.TokensPerSecond:F1} tokens/s), loss {r.FinalLoss:F3}: plan {(r.Honoured ? "[green]honoured[/]" : "[red]NOT honoured[/]")}"));
    }

    private static void Print(Plan p, string name)
    {
        var inv = CultureInfo.InvariantCulture;
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 180;
        AnsiConsole.MarkupLine(Markup.Escape(p.Message));
        var t = new Table().AddColumn("fit").AddColumn(new TableColumn("value").RightAligned()).AddColumn("train options");
        foreach (var m in Enum.GetValues<MemoryCategory>()) t.AddColumn(new TableColumn(m.ToString().ToLowerInvariant()).RightAligned());
        t.AddColumn(new TableColumn("total").RightAligned());
        t.AddColumn(new TableColumn("host").RightAligned());
        void Row(string what, FitResult? r)
        {
            if (r == null) { t.AddRow(what, "-", "does not fit"); return; }
            var cells = new List<string> { what, r.Value.ToString(inv), Markup.Escape(SettingFlags.TrainFlags(r.Option)) };
            cells.AddRange(Enum.GetValues<MemoryCategory>().Select(m => ByteSize.Format(r.Estimate[m])));
            cells.Add(ByteSize.Format(r.Estimate.PeakBytes));
            cells.Add(r.Estimate.HostBytes > 0 ? ByteSize.Format(r.Estimate.HostBytes) : "-");
            t.AddRow(cells.ToArray());
        }
        Row("max seq len (batch 1)", p.MaxSeq);
        Row($"max batch (seq {p.Base.SeqLen})", p.MaxBatch);
        Row($"fewest levers at seq {p.Base.SeqLen}, batch 1", p.Cheapest);
        if (p.MaxSeqWithUnavailable != null) Row("max seq len, levers not yet available", p.MaxSeqWithUnavailable);
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine(Markup.Escape($"{name}: budget {ByteSize.Format(p.Budget)}, {ByteSize.Format(p.Margin)} kept for arena block rounding; host = offloaded state in system memory"));
        if (p.MaxSeq != null)
            AnsiConsole.MarkupLine(Markup.Escape($"train with: --seq-len {p.MaxSeq.Value} --batch 1 {SettingFlags.TrainFlags(p.MaxSeq.Option)}{(p.Base.FreezeA ? " --freeze-a" : "")} --memory-budget {ByteSize.Format(p.Budget).Replace(" ", "")}"));
    }
}
