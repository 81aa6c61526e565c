// `vkpeft demo`: the main job on a default model — QLoRA (NF4+DQ base, LoRA on all seven linear kinds) fine-tunes the
// pretrained stories260K on a small dataset of stories in a distinctive style written for this project, and shows the
// held-out loss and a generated sample before and after.
using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class DemoCommand
{
    public const string Prompt = "Pip pip hooray! Luna the";

    /// <summary>Both samples use the same seeded sampling, so the difference is the adapter's.</summary>
    private static readonly SamplingOptions Sampling = new(Temperature: 0.6f, TopP: 1f, Seed: 1);

    public static Command Create()
    {
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 60 };
        var output = new Option<string>("--out") { Description = "Where the adapter, metrics and plot go", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var cmd = new Command("demo", "QLoRA-fine-tune the tiny pretrained stories260K on a small stories dataset and show before/after") { steps, output };
        cmd.SetAction(parse =>
        {
            var modelPath = DefaultModel.Locate();
            var data = Path.Combine(AppContext.BaseDirectory, "DemoData", "sharing_stories.txt");
            var host = ModelLoader.Load(modelPath);
            var tok = host.Tokenizer ?? throw new FileNotFoundException($"no tokenizer next to {modelPath}");
            var outDir = parse.GetValue(output)!;
            if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
            var quant = BaseQuant.Parse("nf4-dq");
            var options = new TrainOptions
            {
                Data = data,
                EvalFraction = 0.15,
                Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = 16 }, BaseQuant = quant, BaseModel = modelPath },
                Quant = quant,
                Steps = parse.GetValue(steps),
                Batch = 8,
                SeqLen = 64,
                Lr = 2e-3f,
                Warmup = 5,
                EvalEvery = 20,
                Out = outDir,
                Seed = 42,
            };
            var trainData = TrainingData.Load(tok, options.Data, null, options.EvalFraction, options.SeqLen, options.Seed);
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            AnsiConsole.MarkupLine($"[bold]vkpeft demo[/] on [bold]{Markup.Escape(ctx.Caps.Name)}[/] ({ctx.Caps.Kind})");
            AnsiConsole.MarkupLine($"model: stories260K ({Markup.Escape(modelPath)}), base held as NF4 + double-quantized scales; LoRA r=8 on q,k,v,o,gate,up,down");
            AnsiConsole.MarkupLine($"data: {trainData.TrainDocuments} short stories in a 'Pip pip hooray' style for training, {trainData.EvalDocuments} held out");

            string before = Sample(ctx, host, quant, null);
            AnsiConsole.MarkupLine($"\n[bold]before[/] (temperature {Sampling.Temperature}, seed {Sampling.Seed}) — {Markup.Escape(Prompt)} →\n  [grey]{Markup.Escape(before)}[/]\n");
            var summary = TrainCommand.Run(ctx, host, options, trainData);
            string after = Sample(ctx, host, quant, outDir);
            AnsiConsole.MarkupLine($"\n[bold]after[/] (same sampling) — {Markup.Escape(Prompt)} →\n  [green]{Markup.Escape(after)}[/]\n");
            AnsiConsole.MarkupLine(string.Create(CultureInfo.InvariantCulture,
                $"held-out loss: [bold]{summary.InitialEvalLoss:F3}[/] before → [bold]{summary.EvalLoss:F3}[/] after ({summary.Steps} steps, {summary.TokensPerSecond:F0} tokens/s, {summary.WallSeconds:F1} s)"));
            var full = Path.GetFullPath(outDir);
            AnsiConsole.MarkupLine($"adapter:      {Markup.Escape(full)}");
            AnsiConsole.MarkupLine($"loss curve:   {Markup.Escape(Path.Combine(full, "loss.svg"))} (data in metrics.csv)");
            AnsiConsole.MarkupLine($"summary:      {Markup.Escape(Path.Combine(full, "summary.json"))}");
            AnsiConsole.MarkupLine($"try it:       ./vkpeft generate --model {Markup.Escape(modelPath)} --adapter {Markup.Escape(full)} --prompt \"{Prompt}\" --temperature 0.6");
            return 0;
        });
        return cmd;
    }

    private static string Sample(VulkanContext ctx, LoadedModel host, BaseQuant quant, string? adapter)
    {
        var tok = host.Tokenizer!;
        var ids = tok.Encode(Prompt, bos: true);
        using var session = AdapterSession.Open(ctx, adapter, host, quant, quantGiven: true, maxRows: 160);
        using var runner = new LlamaRunner(session.Model, 1, 160, kvCache: true, adapter: session.Adapter);
        var all = new Generator(runner).Generate(ids, 100, Sampling, tok.Eos);
        return tok.Decode(all.AsSpan(ids.Length)).Trim();
    }
}
