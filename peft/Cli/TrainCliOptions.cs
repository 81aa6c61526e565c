// The options of one training run (model, data, method knobs, optimizer, schedule, memory levers, evaluation, output),
// declared once and turned into TrainOptions for a given method: `train` uses them for its --method, `compare` for
// each method it compares.
using System.CommandLine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Training;

namespace VkPeft.Cli;

public sealed class TrainCliOptions
{
    public ModelOptions Model { get; } = new();
    public MethodCliOptions Methods { get; } = new();
    public Option<string> Data { get; } = new("--data") { Description = ".txt (one document per line), .jsonl with \"text\", or instruction records", Required = true };
    public Option<string?> EvalData { get; } = new("--eval-data") { Description = "Held-out data (default: --eval-fraction of --data)" };
    public Option<double> EvalFraction { get; } = new("--eval-fraction") { Description = "Share of documents held out when no --eval-data", DefaultValueFactory = _ => 0.1 };
    public Option<string> Targets { get; } = new("--targets") { Description = "Linear layers to adapt: q,k,v,o,gate,up,down (all; k,v,down for ia3)", DefaultValueFactory = _ => "q,k,v,o,gate,up,down" };
    public Option<int?> GroupSize { get; } = new("--group-size") { Description = "INT4 / QA-LoRA group size (default 32)" };
    public Option<int> Steps { get; } = new("--steps") { Description = "Optimizer steps", Required = true };
    public Option<int> Batch { get; } = new("--batch") { Description = "Sequences per micro-batch", DefaultValueFactory = _ => 8 };
    public Option<int> SeqLen { get; } = new("--seq-len") { Description = "Tokens per sequence (packed)", DefaultValueFactory = _ => 128 };
    public Option<int> Accum { get; } = new("--grad-accum") { Description = "Micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
    public Option<float> Lr { get; } = new("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 2e-4f };
    public Option<float> WeightDecay { get; } = new("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => 0f };
    public Option<int> Warmup { get; } = new("--warmup") { Description = "Linear warmup steps", DefaultValueFactory = _ => 0 };
    public Option<string> Schedule { get; } = new("--schedule") { Description = "cosine, linear or constant", DefaultValueFactory = _ => "cosine" };
    public Option<float> Clip { get; } = new("--clip") { Description = "Global gradient-norm clip (0 = off)", DefaultValueFactory = _ => 1f };
    public Option<int> LossChunk { get; } = new("--loss-chunk") { Description = "Rows of logits per cross-entropy chunk (fewer rows, less memory)", DefaultValueFactory = _ => 128 };
    public Option<bool?> Checkpointing { get; } = new("--checkpointing") { Description = "Recompute layer activations in backward (default: on above 200M parameters)" };
    public Option<bool> Offload { get; } = new("--offload-checkpoints") { Description = "Keep the layer inputs saved for recomputation in host memory (implies checkpointing)" };
    public Option<bool> OptimizerOnHost { get; } = new("--optimizer-on-host") { Description = "Keep AdamW's m and v in host memory, streamed by the update kernel" };
    public Option<int> EvalEvery { get; }
    public Option<int> SaveEvery { get; } = new("--save-every") { Description = "Checkpoint every N steps (always at the end)", DefaultValueFactory = _ => 0 };
    public Option<int> Seed { get; } = new("--seed") { Description = "Seed for init, data order and dropout", DefaultValueFactory = _ => 42 };
    public Option<string> Output { get; }
    public Option<int> Keep { get; } = new("--keep-checkpoints") { Description = "Checkpoints kept in --out/checkpoints; --resume falls back to an older one when the newest is corrupt", DefaultValueFactory = _ => TrainCheckpoint.DefaultKeep };
    public Option<int?> ReloraEvery { get; } = new("--relora-every") { Description = "ReLoRA (LoRA): every N steps merge the adapter into the base, re-quantize it and restart the adapter" };
    public Option<int?> ReloraWarmup { get; } = new("--relora-warmup") { Description = "ReLoRA: steps over which the learning rate re-warms after a restart (default N/10)" };
    public Option<string> ReloraFrom { get; } = new("--relora-merge-from") { Description = "ReLoRA: merge into a full-precision host copy (original) or the dequantized base (dequantized)", DefaultValueFactory = _ => "original" };
    public Option<double> ReloraPrune { get; } = new("--relora-prune") { Description = "ReLoRA: share of AdamW moments zeroed at a restart, smallest first (1 = reset)", DefaultValueFactory = _ => 0.9 };
    public Option<string> Init { get; } = new("--init") { Description = "LoRA initialization: default (A random, B = 0) or loftq (base + adapter approximate the full-precision weights)", DefaultValueFactory = _ => "default" };
    public Option<int> LoftQIters { get; } = new("--loftq-iters") { Description = "LoftQ: alternations of quantization and rank-r SVD", DefaultValueFactory = _ => 1 };

    /// <param name="evalEveryDescription">Help of --eval-every (its default is 0: `train` evaluates at the start and the end).</param>
    /// <param name="outDescription">Help of --out.</param>
    public TrainCliOptions(string evalEveryDescription, string outDescription)
    {
        EvalEvery = new("--eval-every") { Description = evalEveryDescription, DefaultValueFactory = _ => 0 };
        Output = new("--out") { Description = outDescription, Required = true };
    }

    /// <summary>Adds every option (--method and the method options when <paramref name="methodOption"/>; the method options only otherwise).</summary>
    public void AddTo(Command cmd, bool methodOption = true)
    {
        foreach (var o in new Option[] { Data, EvalData, EvalFraction, Targets, GroupSize, Steps, Batch, SeqLen, Accum, Lr, WeightDecay, Warmup, Schedule,
                     Clip, LossChunk, Checkpointing, Offload, OptimizerOnHost, EvalEvery, SaveEvery, Seed, Output, Keep,
                     ReloraEvery, ReloraWarmup, ReloraFrom, ReloraPrune, Init, LoftQIters })
            cmd.Options.Add(o);
        Model.AddTo(cmd);
        Methods.AddTo(cmd, method: methodOption);
    }

    /// <summary>
    /// The validated options of one run of <paramref name="method"/> into <paramref name="outDir"/>: the method's default
    /// base and targets where --quant and --targets are not given, its own options from the command line, then
    /// <paramref name="variant"/> (e.g. LoRA-FA's --freeze-a for a `lora-fa` entry of compare).
    /// </summary>
    public TrainOptions Build(ParseResult parse, PeftMethod method, string outDir, int evalEvery, bool resume,
        Func<AdapterConfig, AdapterConfig>? variant = null)
    {
        int? gs = parse.GetValue(GroupSize);
        if (gs is < 1) throw new CliUsageException($"--group-size must be ≥ 1, got {gs}");
        var fallback = method.DefaultQuant(gs);
        var quant = Model.QuantOr(parse, fallback, fallback.IsInt4 || parse.GetValue(Model.Quant) == "int4" ? gs ?? 32 : null);
        var adapter = Methods.Configure(parse, new AdapterConfig
        {
            Method = method,
            Targets = parse.GetResult(Targets) is null or { Implicit: true } && method.DefaultTrainTargets is { } methodTargets
                ? methodTargets : AdapterConfig.ParseTargets(parse.GetValue(Targets)!),
            Settings = method.DefaultSettings(quant),
            BaseQuant = quant,
            BaseModel = parse.GetValue(Model.Model)!,
        });
        if (variant != null) adapter = variant(adapter);
        var options = new TrainOptions
        {
            Data = parse.GetValue(Data)!,
            EvalData = parse.GetValue(EvalData),
            EvalFraction = parse.GetValue(EvalFraction),
            Adapter = adapter,
            Quant = quant,
            EmbeddingQuant = Model.EmbeddingQuant(parse),
            Steps = parse.GetValue(Steps),
            Batch = parse.GetValue(Batch),
            SeqLen = parse.GetValue(SeqLen),
            GradAccum = parse.GetValue(Accum),
            Lr = parse.GetValue(Lr),
            WeightDecay = parse.GetValue(WeightDecay),
            Warmup = parse.GetValue(Warmup),
            Schedule = parse.GetValue(Schedule)!.ToLowerInvariant() switch
            {
                "cosine" => LrSchedule.Cosine,
                "linear" => LrSchedule.Linear,
                "constant" => LrSchedule.Constant,
                var other => throw new CliUsageException($"--schedule: unknown schedule '{other}' (use cosine, linear or constant)"),
            },
            Clip = parse.GetValue(Clip),
            Checkpointing = parse.GetValue(Checkpointing),
            LogitRows = parse.GetValue(LossChunk),
            OffloadCheckpoints = parse.GetValue(Offload),
            OptimizerOnHost = parse.GetValue(OptimizerOnHost),
            EvalEvery = evalEvery,
            SaveEvery = parse.GetValue(SaveEvery),
            Seed = parse.GetValue(Seed),
            Out = outDir,
            Resume = resume,
            KeepCheckpoints = parse.GetValue(Keep),
            Relora = parse.GetValue(ReloraEvery) is not { } every ? null : new ReloraOptions
            {
                Every = every,
                Warmup = parse.GetValue(ReloraWarmup),
                PruneRatio = parse.GetValue(ReloraPrune),
                MergeFrom = parse.GetValue(ReloraFrom)!.ToLowerInvariant() switch
                {
                    "original" => ReloraMergeFrom.Original,
                    "dequantized" => ReloraMergeFrom.Dequantized,
                    var other => throw new CliUsageException($"--relora-merge-from: unknown value '{other}' (use original or dequantized)"),
                },
            },
        };
        options = parse.GetValue(Init)!.ToLowerInvariant() switch
        {
            "default" when parse.GetResult(LoftQIters) is { Implicit: false } => throw new CliUsageException("--loftq-iters needs --init loftq"),
            "default" => options,
            "loftq" => options with { LoftQIterations = parse.GetValue(LoftQIters) },
            var other => throw new CliUsageException($"--init: unknown value '{other}' (use default or loftq)"),
        };
        if (options.Relora == null && (parse.GetResult(ReloraWarmup) != null || parse.GetResult(ReloraFrom) is { Implicit: false } || parse.GetResult(ReloraPrune) is { Implicit: false }))
            throw new CliUsageException("--relora-warmup, --relora-merge-from and --relora-prune need --relora-every");
        options.Validate();
        return options;
    }
}
