// The settings of a training run as errors name them (see SettingException): library code says which setting is wrong,
// and a front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>The settings of <see cref="TrainOptions"/> and <see cref="ReloraOptions"/> that errors name.</summary>
public static class TrainSettings
{
    public static readonly Setting Steps = Setting.Of<TrainOptions>(nameof(TrainOptions.Steps));
    public static readonly Setting Batch = Setting.Of<TrainOptions>(nameof(TrainOptions.Batch));
    public static readonly Setting SeqLen = Setting.Of<TrainOptions>(nameof(TrainOptions.SeqLen));
    public static readonly Setting GradAccum = Setting.Of<TrainOptions>(nameof(TrainOptions.GradAccum));
    public static readonly Setting Lr = Setting.Of<TrainOptions>(nameof(TrainOptions.Lr));
    public static readonly Setting WeightDecay = Setting.Of<TrainOptions>(nameof(TrainOptions.WeightDecay));
    public static readonly Setting Warmup = Setting.Of<TrainOptions>(nameof(TrainOptions.Warmup));
    public static readonly Setting Clip = Setting.Of<TrainOptions>(nameof(TrainOptions.Clip));
    public static readonly Setting EvalFraction = Setting.Of<TrainOptions>(nameof(TrainOptions.EvalFraction));
    public static readonly Setting EvalEvery = Setting.Of<TrainOptions>(nameof(TrainOptions.EvalEvery));
    public static readonly Setting SaveEvery = Setting.Of<TrainOptions>(nameof(TrainOptions.SaveEvery));
    public static readonly Setting KeepCheckpoints = Setting.Of<TrainOptions>(nameof(TrainOptions.KeepCheckpoints));
    public static readonly Setting Checkpointing = Setting.Of<TrainOptions>(nameof(TrainOptions.Checkpointing));
    public static readonly Setting OffloadCheckpoints = Setting.Of<TrainOptions>(nameof(TrainOptions.OffloadCheckpoints));
    public static readonly Setting Resume = Setting.Of<TrainOptions>(nameof(TrainOptions.Resume));
    /// <summary>LoftQ initialization itself (<see cref="TrainOptions.LoftQIterations"/> set).</summary>
    public static readonly Setting LoftQ = Setting.Of<TrainOptions>("LoftQ");
    public static readonly Setting LoftQIterations = Setting.Of<TrainOptions>(nameof(TrainOptions.LoftQIterations));
    public static readonly Setting ReloraEvery = Setting.Of<ReloraOptions>(nameof(ReloraOptions.Every));
    public static readonly Setting ReloraWarmup = Setting.Of<ReloraOptions>(nameof(ReloraOptions.Warmup));
    public static readonly Setting ReloraPrune = Setting.Of<ReloraOptions>(nameof(ReloraOptions.PruneRatio));
}
