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
        var method = new Option<string>("--method") { Description = "lora or qalora", DefaultValueFactory = _ => "lora" };
        var quant = new Option<string?>("--quant") { Description = "Base format: none, nf4, nf4-dq, fp4, fp4-dq, int4 (default nf4-dq; int4 for qalora)" };
        var rank = new Option<int>("--rank") { Description = "LoRA rank r", DefaultValueFactory = _ => 8 };
        var targets = new Option<string>("--targets") { Description = "Linear layers to adapt", DefaultValueFactory = _ => "q,k,v,o,gate,up,down" };
        var seqLen = new Option<int>("--seq-len") { Description = "Sequence length for the batch search", DefaultValueFactory = _ => 2048 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var cmd = new Command("plan", "Largest sequence length and batch that fit a memory budget (analytic memory model)")
        {
            config, model, memory, method, quant, rank, targets, seqLen, json,
        };
        cmd.SetAction(parse =>
        {
            var (name, c) = Resolve(parse.GetValue(config), parse.GetValue(model));
            var setup = Setup(c, parse.GetValue(method)!, parse.GetValue(quant), parse.GetValue(rank), parse.GetValue(targets)!, parse.GetValue(seqLen));
            long budget = (long)ByteSize.Parse(parse.GetValue(memory)!, "--memory");
            var plan = FitPlanner.Make(setup, budget);
            if (parse.GetValue(json)) Console.WriteLine(FitPlanner.ToJson(plan, name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(plan, name);
            return 0;
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
        var m = method.ToLowerInvariant() switch
        {
            "lora" => PeftMethod.Lora,
            "qalora" or "qa-lora" => PeftMethod.QaLora,
            "adapter" => PeftMethod.Adapter,
            var other => throw new CliUsageException($"--method: unknown method '{other}' (use lora, qalora or adapter)"),
        };
        if (rank < 1) throw new CliUsageException($"--rank must be ≥ 1, got {rank}");
        if (seqLen < 2) throw new CliUsageException($"--seq-len must be ≥ 2, got {seqLen}");
        var q = BaseQuant.Parse(quant ?? (m == PeftMethod.QaLora ? "int4" : "nf4-dq"));
        return new TrainSetup
        {
            Config = c, Method = m, Quant = q, Rank = rank, Targets = AdapterConfig.ParseTargets(targets),
            GroupSize = q.IsInt4 ? q.Blocksize : 32, Batch = 1, SeqLen = seqLen, Checkpointing = true,
        };
    }

    private static void Print(Plan p, string name)
    {
        var inv = CultureInfo.InvariantCulture;
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 180;
        AnsiConsole.MarkupLine(Markup.Escape(p.Message));
        var t = new Table().AddColumn("fit").AddColumn(new TableColumn("value").RightAligned()).AddColumn("switches");
        foreach (var m in Enum.GetValues<MemoryCategory>()) t.AddColumn(new TableColumn(m.ToString().ToLowerInvariant()).RightAligned());
        t.AddColumn(new TableColumn("total").RightAligned());
        void Row(string what, FitResult? r)
        {
            if (r == null) { t.AddRow(what, "-", "does not fit"); return; }
            var cells = new List<string> { what, r.Value.ToString(inv), Markup.Escape(string.Join(", ", r.Option.Switches(p.Base))) };
            cells.AddRange(Enum.GetValues<MemoryCategory>().Select(m => ByteSize.Format(r.Estimate[m])));
            cells.Add(ByteSize.Format(r.Estimate.PeakBytes));
            t.AddRow(cells.ToArray());
        }
        Row("max seq len (batch 1)", p.MaxSeq);
        Row($"max batch (seq {p.Base.SeqLen})", p.MaxBatch);
        if (p.MaxSeqWithUnavailable != null) Row("max seq len, levers not yet available", p.MaxSeqWithUnavailable);
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine(Markup.Escape($"{name}: budget {ByteSize.Format(p.Budget)}, {ByteSize.Format(p.Margin)} kept for arena block rounding"));
    }
}
