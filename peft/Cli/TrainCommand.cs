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
        var model = new ModelOptions();
        var data = new Option<string>("--data") { Description = ".txt (one document per line), .jsonl with \"text\", or instruction records", Required = true };
        var evalData = new Option<string?>("--eval-data") { Description = "Held-out data (default: --eval-fraction of --data)" };
        var evalFraction = new Option<double>("--eval-fraction") { Description = "Share of documents held out when no --eval-data", DefaultValueFactory = _ => 0.1 };
        var methods = new MethodCliOptions();
        var targets = new Option<string>("--targets") { Description = "Linear layers to adapt: q,k,v,o,gate,up,down (all; k,v,down for ia3)", DefaultValueFactory = _ => "q,k,v,o,gate,up,down" };
        var groupSize = new Option<int?>("--group-size") { Description = "INT4 / QA-LoRA group size (default 32)" };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", Required = true };
        var batch = new Option<int>("--batch") { Description = "Sequences per micro-batch", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence (packed)", DefaultValueFactory = _ => 128 };
        var accum = new Option<int>("--grad-accum") { Description = "Micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 2e-4f };
        var wd = new Option<float>("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => 0f };
        var warmup = new Option<int>("--warmup") { Description = "Linear warmup steps", DefaultValueFactory = _ => 0 };
        var schedule = new Option<string>("--schedule") { Description = "cosine, linear or constant", DefaultValueFactory = _ => "cosine" };
        var clip = new Option<float>("--clip") { Description = "Global gradient-norm clip (0 = off)", DefaultValueFactory = _ => 1f };
        var lossChunk = new Option<int>("--loss-chunk") { Description = "Rows of logits per cross-entropy chunk (fewer rows, less memory)", DefaultValueFactory = _ => 128 };
        var checkpointing = new Option<bool?>("--checkpointing") { Description = "Recompute layer activations in backward (default: on above 200M parameters)" };
        var offload = new Option<bool>("--offload-checkpoints") { Description = "Keep the layer inputs saved for recomputation in host memory (implies checkpointing)" };
        var optimizerOnHost = new Option<bool>("--optimizer-on-host") { Description = "Keep AdamW's m and v in host memory, streamed by the update kernel" };
        var evalEvery = new Option<int>("--eval-every") { Description = "Held-out evaluation every N steps (0 = at the end)", DefaultValueFactory = _ => 0 };
        var saveEvery = new Option<int>("--save-every") { Description = "Checkpoint every N steps (always at the end)", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Seed for init, data order and dropout", DefaultValueFactory = _ => 42 };
        var output = new Option<string>("--out") { Description = "Output directory (adapter, checkpoints, metrics)", Required = true };
        var resume = new Option<bool>("--resume") { Description = "Continue from the newest intact checkpoint in --out (a finished run is left as it is)" };
        var keep = new Option<int>("--keep-checkpoints") { Description = "Checkpoints kept in --out/checkpoints; --resume falls back to an older one when the newest is corrupt", DefaultValueFactory = _ => TrainCheckpoint.DefaultKeep };
        var cmd = new Command("train", "Fine-tune an adapter (LoRA, QA-LoRA, bottleneck, (IA)³, bias or norm tuning) on a frozen 4-bit base")
        {
            data, evalData, evalFraction, targets, groupSize, steps, batch, seqLen,
            accum, lr, wd, warmup, schedule, clip, lossChunk, checkpointing, offload, optimizerOnHost, evalEvery, saveEvery, seed, output, resume, keep,
        };
        model.AddTo(cmd);
        methods.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            var m = MethodCliOptions.Parse(parse.GetValue(methods.Method)!);
            int? gs = parse.GetValue(groupSize);
            if (gs is < 1) throw new CliUsageException($"--group-size must be ≥ 1, got {gs}");
            var fallback = m.DefaultQuant(gs);
            var quant = model.QuantOr(parse, fallback, fallback.IsInt4 || parse.GetValue(model.Quant) == "int4" ? gs ?? 32 : null);
            var adapterCfg = methods.Configure(parse, new AdapterConfig
            {
                Method = m,
                Targets = parse.GetResult(targets) is null or { Implicit: true } && m.DefaultTrainTargets is { } methodTargets
                    ? methodTargets : AdapterConfig.ParseTargets(parse.GetValue(targets)!),
                GroupSize = gs ?? quant.Blocksize,
                BaseQuant = quant,
                BaseModel = parse.GetValue(model.Model)!,
            });
            var options = new TrainOptions
            {
                Data = parse.GetValue(data)!,
                EvalData = parse.GetValue(evalData),
                EvalFraction = parse.GetValue(evalFraction),
                Adapter = adapterCfg,
                Quant = quant,
                EmbeddingQuant = model.EmbeddingQuant(parse),
                Steps = parse.GetValue(steps),
                Batch = parse.GetValue(batch),
                SeqLen = parse.GetValue(seqLen),
                GradAccum = parse.GetValue(accum),
                Lr = parse.GetValue(lr),
                WeightDecay = parse.GetValue(wd),
                Warmup = parse.GetValue(warmup),
                Schedule = parse.GetValue(schedule)!.ToLowerInvariant() switch
                {
                    "cosine" => LrSchedule.Cosine,
                    "linear" => LrSchedule.Linear,
                    "constant" => LrSchedule.Constant,
                    var other => throw new CliUsageException($"--schedule: unknown schedule '{other}' (use cosine, linear or constant)"),
                },
                Clip = parse.GetValue(clip),
                Checkpointing = parse.GetValue(checkpointing),
                LogitRows = parse.GetValue(lossChunk),
                OffloadCheckpoints = parse.GetValue(offload),
                OptimizerOnHost = parse.GetValue(optimizerOnHost),
                EvalEvery = parse.GetValue(evalEvery),
                SaveEvery = parse.GetValue(saveEvery),
                Seed = parse.GetValue(seed),
                Out = parse.GetValue(output)!,
                Resume = parse.GetValue(resume),
                KeepCheckpoints = parse.GetValue(keep),
            };
            options.Validate();
            if (options.Resume && TrainCheckpoint.LatestStep(options.Out) is var reached && reached >= options.Steps)
            {
                Console.WriteLine($"{options.Out}: the run already reached step {reached} of --steps {options.Steps}; nothing to do (raise --steps to train further)");
                return 0;
            }
            var (host, tok) = model.LoadHost(parse);
            if (host.Config.MaxSeqLen > 0 && options.SeqLen > host.Config.MaxSeqLen)
                throw new CliUsageException($"--seq-len {options.SeqLen} exceeds the model's context of {host.Config.MaxSeqLen}");
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

    /// <summary>Loads the base onto the device and trains with a progress bar; shared with the demo.</summary>
    public static TrainSummary Run(VulkanContext ctx, Peft.Models.LoadedModel host, TrainOptions options, TrainingData data)
    {
        using var runLock = RunLock.Acquire(options.Out);
        if (!options.Resume && (File.Exists(Path.Combine(options.Out, Trainer.StateFile)) || TrainCheckpoint.Steps(options.Out).Count > 0))
            throw new CliUsageException($"{options.Out} already holds a training run; pass --resume to continue it or choose another --out");
        using var model = ModelOptions.Upload(ctx, host, options.Quant, options.EmbeddingQuant);
        using var trainer = new Trainer(ctx, model, options, data);
        if (options.Resume) trainer.ResumeFrom(options.Out, Console.Error.WriteLine);
        TrainSummary summary = null!;
        Progress.Run($"training {options.Adapter.Method}", options.Steps, "steps", tick =>
        {
            tick(trainer.CompletedSteps, null);
            summary = trainer.Run(r => tick(r.Step, string.Create(CultureInfo.InvariantCulture,
                $"loss {r.Loss:F4}{(r.EvalLoss is { } e ? $" held-out {e:F4}" : "")}  {r.TokensPerSecond:F0} tok/s")));
        });
        if (ctx.Options.Profile) Console.Error.WriteLine(ctx.Commands.Profile.Format());
        return summary;
    }
}
