// The one place that knows how the command line spells the library's settings: each Setting a library error names
// (SettingException) maps to its flag, and an error is printed with the flags in place of the settings.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Tokenizers;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Serve;

namespace VkPeft.Cli;

public static class SettingFlags
{
    /// <summary>Every setting library errors name, as the command line spells it.</summary>
    public static readonly IReadOnlyDictionary<Setting, string> Flags = new Dictionary<Setting, string>
    {
        [RuntimeSettings.Device] = "--device",
        [RuntimeSettings.SafeKernels] = "--kernels safe",
        [RuntimeSettings.QuantEmbeddings] = "--quant-embeddings",
        [EngineSettings.Quant] = "--quant",
        [EngineSettings.GroupSize] = "--group-size",
        [TokenizerSettings.Tokenizer] = "--tokenizer",
        [TokenizerSettings.Model] = "--model",
        [TokenizerSettings.Chat] = "--chat",
        [EngineSettings.Adapter] = "--adapter",
        [EngineSettings.Temperature] = "--temperature",
        [EngineSettings.TopP] = "--top-p",
        [ExportSettings.Format] = "--format",
        [ExportSettings.DType] = "--dtype",
        [ExportSettings.Force] = "--force",
        [PlanSettings.Config] = "--config",
        [PlanSettings.FreezeA] = "--freeze-a",
        [AdapterSettings.Method] = "--method",
        [AdapterSettings.Targets] = "--targets",
        [AdapterSettings.Methods] = "--methods",
        [TrainSettings.Steps] = "--steps",
        [TrainSettings.Batch] = "--batch",
        [TrainSettings.SeqLen] = "--seq-len",
        [TrainSettings.GradAccum] = "--grad-accum",
        [TrainSettings.Lr] = "--lr",
        [TrainSettings.WeightDecay] = "--weight-decay",
        [TrainSettings.Warmup] = "--warmup",
        [TrainSettings.Clip] = "--clip",
        [TrainSettings.EvalFraction] = "--eval-fraction",
        [TrainSettings.EvalEvery] = "--eval-every",
        [TrainSettings.SaveEvery] = "--save-every",
        [TrainSettings.KeepCheckpoints] = "--keep-checkpoints",
        [TrainSettings.Checkpointing] = "--checkpointing",
        [TrainSettings.OffloadCheckpoints] = "--offload-checkpoints",
        [TrainSettings.LossChunk] = "--loss-chunk",
        [TrainSettings.OptimizerOnHost] = "--optimizer-on-host",
        [TrainSettings.Out] = "--out",
        [TrainSettings.Resume] = "--resume",
        [TrainSettings.LoftQ] = "--init loftq",
        [TrainSettings.LoftQIterations] = "--loftq-iters",
        [TrainSettings.ReloraEvery] = "--relora-every",
        [TrainSettings.ReloraWarmup] = "--relora-warmup",
        [TrainSettings.ReloraPrune] = "--relora-prune",
        [ServeSettings.Port] = "--port",
        [ServeSettings.Host] = "--host",
        [ServeSettings.MaxBatch] = "--max-batch",
        [ServeSettings.MaxContext] = "--max-context",
        [ServeSettings.MaxQueue] = "--max-queue",
        [ServeSettings.AdapterBudget] = "--adapter-budget",
        [ServeSettings.KvPageSize] = "--kv-page-size",
        [ServeSettings.KvPages] = "--kv-pages",
        [ServeSettings.MemoryBudget] = "--memory-budget",
        [ServeSettings.RequestTimeout] = "--request-timeout",
        [ServeSettings.GatheredLoraRank] = "--gathered-lora-rank",
        [ServeSettings.GatheredLoraSlots] = "--gathered-lora-slots",
        [ServeSettings.Adapter] = "--adapter",
    };

    /// <summary>
    /// The flag of <paramref name="setting"/>; a method's own option (owner MethodOption, named by its flag without the
    /// dashes) is spelled as that flag; an unmapped setting keeps its library name (a test keeps the table complete).
    /// </summary>
    public static string Spell(Setting setting) =>
        Flags.TryGetValue(setting, out var flag) ? flag
        : setting.Owner == nameof(MethodOption) ? "--" + setting.Name
        : setting.ToString();

    /// <summary>The one-line message of an error that names settings, with their flags.</summary>
    public static string Message(ISettingError error) => error.Detail.Render(Spell);

    /// <summary>The `vkpeft train` options that select <paramref name="o"/>'s way to run.</summary>
    public static string TrainFlags(PlanOption o) =>
        $"--checkpointing {(o.Checkpointing ? "true" : "false")} --loss-chunk {o.LogitRows}" + (o.Embeddings == EmbeddingFormat.Nf4 ? " --quant-embeddings nf4-dq" : "")
        + (o.OffloadCheckpoints ? " --offload-checkpoints" : "") + (o.OptimizerOnHost ? " --optimizer-on-host" : "");
}
