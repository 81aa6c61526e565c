// `vkpeft train`: QLoRA-style fine-tuning of an adapter on a frozen quantized base, with a progress bar, metrics.csv,
// loss.svg, summary.json and checkpoints in --out.
using System.CommandLine;
using System.Globalization;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class TrainCommand
{
    public static Command Create()
    {
        var train = new TrainCliOptions("Held-out evaluation every N steps (0 = at the end)", "Output directory (adapter, checkpoints, metrics)");
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest intact checkpoint in --out (a finished run is left as it is)" };
        var cmd = new Command("train", "Fine-tune an adapter (LoRA, QA-LoRA, bottleneck, (IA)³, LLaMA-Adapter, bias or norm tuning) on a frozen 4-bit base");
        train.AddTo(cmd);
        cmd.Options.Add(resume);
        cmd.SetAction(parse =>
        {
            var m = MethodCliOptions.Parse(parse.GetValue(train.Methods.Method)!);
            var options = train.Build(parse, m, parse.GetValue(train.Output)!, parse.GetValue(train.EvalEvery), parse.GetValue(resume));
            if (options.Resume && TrainCheckpoint.LatestStep(options.Out) is var reached && reached >= options.Steps)
            {
                Console.WriteLine($"{options.Out}: the run already reached step {reached} of --steps {options.Steps}; nothing to do (raise --steps to train further)");
                return 0;
            }
            var (host, tok) = train.Model.LoadHost(parse);
            options = options with { Adapter = options.Adapter.Method.WithTokenizer(options.Adapter, tok) };
            if (host.Config.MaxSeqLen > 0 && options.SeqLen > host.Config.MaxSeqLen)
                throw new CliUsageException($"--seq-len {options.SeqLen} exceeds the model's context of {host.Config.MaxSeqLen}");
            int extraRows = m.ExtraRowsPerSequence(new Peft.Planning.TrainSetup { Config = host.Config, Method = m, Settings = options.Adapter.Settings });
            if (host.Config.MaxSeqLen > 0 && options.SeqLen + extraRows > host.Config.MaxSeqLen)
                throw new CliUsageException($"--virtual-tokens {extraRows} before --seq-len {options.SeqLen} exceeds the model's context of {host.Config.MaxSeqLen}");
            var trainData = TrainingData.Load(tok, options.Data, options.EvalData, options.EvalFraction, options.SeqLen, options.Seed);
            Console.Error.WriteLine($"data: {trainData.TrainDocuments} training documents → {trainData.Train.Count} windows of {options.SeqLen} tokens; {trainData.EvalDocuments} held-out documents");
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            var summary = Run(ctx, host, options, trainData);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"done: {summary.Steps} steps, final train loss {summary.FinalTrainLoss:F4}, held-out loss {Fmt(summary.InitialEvalLoss)} → {Fmt(summary.EvalLoss)}, {summary.TokensPerSecond:F0} tokens/s, peak device memory {ByteSize.Format(summary.PeakDeviceBytes)} ({ByteSize.Format(summary.PeakReservedBytes)} reserved){(summary.PeakHostBytes > 0 ? $", host {ByteSize.Format(summary.PeakHostBytes)}" : "")}"));
            Console.WriteLine($"adapter, metrics.csv, loss.svg and summary.json written to {Path.GetFullPath(options.Out)}");
            return 0;
        });
        return cmd;
    }

    private static string Fmt(double? v) => v is { } x ? x.ToString("F4", CultureInfo.InvariantCulture) : "-";

    /// <summary>
    /// Loads the base onto the device and trains with a progress bar titled <paramref name="title"/> (default "training
    /// METHOD"); shared with the demo and compare.
    /// </summary>
    public static TrainSummary Run(VulkanContext ctx, Peft.Models.LoadedModel host, TrainOptions options, TrainingData data, string? title = null)
    {
        using var runLock = RunLock.Acquire(options.Out);
        if (!options.Resume && (File.Exists(Path.Combine(options.Out, Trainer.StateFile)) || TrainCheckpoint.Steps(options.Out).Count > 0))
            throw new CliUsageException($"{options.Out} already holds a training run; pass --resume to continue it or choose another --out");
        LoftQStart? loftq = null;
        if (options.LoftQIterations is { } iterations)
        {
            Progress.Run($"LoftQ initialization ({iterations} iteration{(iterations == 1 ? "" : "s")})", host.Config.NLayers * options.Adapter.Targets.Length, "linears",
                tick => loftq = LoftQInit.Apply(host, options.Adapter, options.Quant, iterations, options.Seed, (done, _) => tick(done)));
            foreach (var line in loftq!.LogLines()) Console.Error.WriteLine(line);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"LoftQ: ‖W − (Q + s·B·A)‖ over all targets {loftq.TotalBefore:G4} (quantized base alone) → {loftq.TotalAfter:G4}"));
            host = loftq.Backbone;
            options = options with { InitialAdapter = loftq.Adapter };
            Console.Error.WriteLine($"LoftQ backbone (quantize it with --quant {options.Quant.Type} to get the trained base): {LoftQInit.WriteBackbone(loftq, options.Out)}");
        }
        using var model = ModelOptions.Upload(ctx, host, options.Quant, options.EmbeddingQuant);
        using var trainer = new Trainer(ctx, model, options, data, host) { Log = Console.Error.WriteLine };
        if (loftq != null) trainer.ExtraSummary["loftq"] = loftq.ToJson(options.LoftQIterations!.Value);
        if (options.Resume) trainer.ResumeFrom(options.Out, Console.Error.WriteLine);
        TrainSummary summary = null!;
        Progress.Run(title ?? $"training {options.Adapter.Method}", options.Steps, "steps", tick =>
        {
            tick(trainer.CompletedSteps, null);
            summary = trainer.Run(r => tick(r.Step, string.Create(CultureInfo.InvariantCulture,
                $"loss {r.Loss:F4}{(r.EvalLoss is { } e ? $" held-out {e:F4}" : "")}  {r.TokensPerSecond:F0} tok/s")));
        });
        if (ctx.Options.Profile) Console.Error.WriteLine(ctx.Commands.Profile.Format());
        return summary;
    }
}
