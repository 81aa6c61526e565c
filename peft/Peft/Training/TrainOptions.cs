// Everything `vkpeft train` takes, validated with errors that name the setting (SettingException).
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

public enum LrSchedule { Cosine, Linear, Constant }

public sealed record TrainOptions
{
    public required string Data { get; init; }
    public string? EvalData { get; init; }
    public double EvalFraction { get; init; } = 0.1;
    public required AdapterConfig Adapter { get; init; }
    public required BaseQuant Quant { get; init; }
    /// <summary>How the token embedding and classifier are held (fp32 unless --quant-embeddings).</summary>
    public BaseQuant EmbeddingQuant { get; init; } = BaseQuant.None;
    public int Steps { get; init; } = 100;
    public int Batch { get; init; } = 8;
    public int SeqLen { get; init; } = 128;
    public int GradAccum { get; init; } = 1;
    public float Lr { get; init; } = 2e-4f;
    public float WeightDecay { get; init; }
    public int Warmup { get; init; }
    public LrSchedule Schedule { get; init; } = LrSchedule.Cosine;
    public float Clip { get; init; } = 1f;
    public bool? Checkpointing { get; init; }
    /// <summary>Keep the layer inputs saved for recomputation in host memory (needs checkpointing).</summary>
    public bool OffloadCheckpoints { get; init; }
    /// <summary>Keep AdamW's m and v in host memory; the update kernel streams them.</summary>
    public bool OptimizerOnHost { get; init; }
    /// <summary>Trainable tensors packed into flat buffers (a constant number of optimizer dispatches per step), or one
    /// buffer set per tensor; both give bit-identical training.</summary>
    public ParameterLayout ParameterLayout { get; init; } = ParameterLayout.Packed;
    /// <summary>Rows of logits per cross-entropy chunk (the fit planner lowers it to save memory).</summary>
    public int LogitRows { get; init; } = 128;
    public int EvalEvery { get; init; }
    public int SaveEvery { get; init; }
    public int Seed { get; init; } = 42;
    public required string Out { get; init; }
    public bool Resume { get; init; }

    /// <summary>ReLoRA merge-and-restart every N steps (LoRA only); null trains one adapter throughout.</summary>
    public ReloraOptions? Relora { get; init; }

    /// <summary>--init loftq --loftq-iters k: LoftQ alternations per target (null: LoRA's own initialization). See LoftQInit.</summary>
    public int? LoftQIterations { get; init; }

    /// <summary>Values the trainable tensors start from instead of the method's initialization (LoftQ's A and B).</summary>
    public AdapterWeights? InitialAdapter { get; init; }

    /// <summary>Checkpoint folders kept under --out/checkpoints (the newest and older ones to fall back on).</summary>
    public int KeepCheckpoints { get; init; } = TrainCheckpoint.DefaultKeep;

    public void Validate()
    {
        if (Steps < 1) throw new SettingException($"{TrainSettings.Steps} must be ≥ 1, got {Steps}");
        if (Batch < 1) throw new SettingException($"{TrainSettings.Batch} must be ≥ 1, got {Batch}");
        if (SeqLen < 2) throw new SettingException($"{TrainSettings.SeqLen} must be ≥ 2, got {SeqLen}");
        if (LogitRows < 1) throw new FormatException($"logit rows must be ≥ 1, got {LogitRows}");
        if (OffloadCheckpoints && Checkpointing == false) throw new SettingException($"{TrainSettings.OffloadCheckpoints} keeps the layer inputs that checkpointing recomputes from: drop {TrainSettings.Checkpointing} off");
        if (GradAccum < 1) throw new SettingException($"{TrainSettings.GradAccum} must be ≥ 1, got {GradAccum}");
        if (!(Lr > 0) || !float.IsFinite(Lr)) throw new SettingException($"{TrainSettings.Lr} must be a positive number, got {Lr}");
        if (WeightDecay < 0 || !float.IsFinite(WeightDecay)) throw new SettingException($"{TrainSettings.WeightDecay} must be ≥ 0, got {WeightDecay}");
        if (Warmup < 0) throw new SettingException($"{TrainSettings.Warmup} must be ≥ 0, got {Warmup}");
        if (Clip < 0 || !float.IsFinite(Clip)) throw new SettingException($"{TrainSettings.Clip} must be ≥ 0 (0 = off), got {Clip}");
        if (EvalFraction is < 0 or >= 1) throw new SettingException($"{TrainSettings.EvalFraction} must be in [0, 1), got {EvalFraction}");
        if (EvalEvery < 0) throw new SettingException($"{TrainSettings.EvalEvery} must be ≥ 0, got {EvalEvery}");
        if (SaveEvery < 0) throw new SettingException($"{TrainSettings.SaveEvery} must be ≥ 0, got {SaveEvery}");
        if (KeepCheckpoints < 1) throw new SettingException($"{TrainSettings.KeepCheckpoints} must be ≥ 1, got {KeepCheckpoints}");
        Adapter.Method.ValidateOptions(Adapter, Quant);
        Relora?.Validate(Adapter, Quant);
        if (LoftQIterations is { } k) LoftQInit.Validate(k, Adapter, Quant);
    }

    /// <summary>
    /// The learning rate at optimizer step <paramref name="step"/> (1-based): linear warmup, then the schedule to 0; with
    /// ReLoRA the jagged schedule — the same curve times a linear re-warm from 0 over the restart warmup after each restart.
    /// </summary>
    public double LearningRate(long step)
    {
        double lr = BaseLearningRate(step);
        return Relora is { } r ? lr * r.RewarmFactor(step) : lr;
    }

    private double BaseLearningRate(long step)
    {
        if (Warmup > 0 && step <= Warmup) return Lr * step / (double)Warmup;
        double progress = Steps <= Warmup ? 1 : (step - Warmup) / (double)Math.Max(1, Steps - Warmup);
        progress = Math.Clamp(progress, 0, 1);
        return Schedule switch
        {
            LrSchedule.Cosine => Lr * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            LrSchedule.Linear => Lr * (1 - progress),
            _ => Lr,
        };
    }
}
