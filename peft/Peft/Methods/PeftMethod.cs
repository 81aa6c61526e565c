// What a PEFT method is: one unit owning its configuration fields (validation, vkpeft and PEFT JSON), its single
// parameter spec (names, shapes, initialization — used by initialization, validation, the memory model, adapter I/O and
// merge), its device runtime (training and inference), its merge rule or the reason it has none, its memory-model terms
// and its command-line options. Each method lives in its own folder under Methods/ and is registered in PeftMethods.
using System.Globalization;
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods;

/// <summary>
/// How a trainable tensor starts: zeros, a constant, U(−bound, bound) or N(0, std²) drawn in order from the seeded stream
/// (a method may then overwrite it from the base model: see <see cref="PeftMethod.InitializeFromBase"/>).
/// </summary>
public abstract record ParameterInit
{
    public sealed record Zeros : ParameterInit;
    public sealed record Constant(float Value) : ParameterInit;
    public sealed record Uniform(float Bound) : ParameterInit;
    public sealed record Normal(float Std) : ParameterInit;

    /// <summary>
    /// The per-output-row norms ‖W_j‖ of one base linear as the device holds it (dequantized inside the kernel): DoRA's
    /// magnitudes. Needs the base model at initialization.
    /// </summary>
    public sealed record BaseRowNorms(int Layer, TargetModule Target) : ParameterInit;
}

/// <summary>
/// One trainable tensor of a method: canonical name (see <see cref="AdapterWeights"/>), shape and initialization. When
/// its rows follow the output rows of a linear (<paramref name="OutputRowsOf"/>, e.g. LoRA B), q/k rows are converted
/// between RoPE layouts wherever the adapter moves between bases. A <paramref name="Frozen"/> tensor keeps its
/// initialization: it is stored and saved, but gets no gradient and no optimizer state (LoRA-FA's A).
/// </summary>
public sealed record ParameterSpec(string Name, long[] Shape, ParameterInit Init, TargetModule? OutputRowsOf = null, bool Frozen = false)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A command-line option a method owns: the flag, its help text, the default value (as typed on the command line; null
/// for an on/off switch) and how a value sets the adapter configuration. Methods that share a knob return the same option.
/// The method owns its flags: its messages about its own options name them through the option (<see cref="Flag"/>).
/// </summary>
public sealed record MethodOption(string Flag, string Description, string? Default, Func<AdapterConfig, string, AdapterConfig> Apply)
{
    public bool IsSwitch => Default is null;

    /// <summary><see cref="Apply"/>, with a bad value's error prefixed by the flag ("--rank: 'x' is not a whole number").</summary>
    public AdapterConfig Set(AdapterConfig config, string value)
    {
        try { return Apply(config, value); }
        catch (SettingException e) { throw new SettingException($"{Flag}: {e.Detail}"); }
        catch (FormatException e) { throw new FormatException($"{Flag}: {e.Message}", e); }
    }

    /// <summary>An integer option value, or a FormatException (<see cref="Set"/> names the flag).</summary>
    public static int Int(string v) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int x) ? x : throw new FormatException($"'{v}' is not a whole number");

    /// <summary>A number option value, or a FormatException (<see cref="Set"/> names the flag).</summary>
    public static float Float(string v) =>
        float.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out float x) ? x : throw new FormatException($"'{v}' is not a number");
}

/// <summary>
/// A method's own configuration record, carried by <see cref="AdapterConfig.Settings"/> (read with
/// <see cref="AdapterConfig.SettingsOf{T}"/>) and written by the method into vkpeft_adapter.json as it chooses (LoRA,
/// QA-LoRA and bottleneck adapters keep the flat fields existing adapter files use).
/// </summary>
public abstract record MethodSettings;

/// <summary>One memory-model term of a method: a named allocation charged to a category, in bytes.</summary>
public sealed record MethodMemoryTerm(string Name, MemoryCategory Category, long Bytes);

public abstract class PeftMethod
{
    /// <summary>LoRA: y += s·B·A·x after each targeted linear.</summary>
    public static PeftMethod Lora => PeftMethods.Get("lora");

    /// <summary>QA-LoRA: LoRA on group means of the input, against an INT4 group-quantized base.</summary>
    public static PeftMethod QaLora => PeftMethods.Get("qa-lora");

    /// <summary>Bottleneck adapters (Houlsby or parallel).</summary>
    public static PeftMethod Adapter => PeftMethods.Get("adapter");

    /// <summary>The name stored in adapter files ("method" in vkpeft_adapter.json).</summary>
    public abstract string Name { get; }

    /// <summary>The name the command line shows and accepts first (--method), also used in reports and summaries.</summary>
    public virtual string CliName => Name;

    /// <summary>Further names --method accepts.</summary>
    public virtual IReadOnlyList<string> Aliases => [];

    public override string ToString() => CliName;

    // ---------------------------------------------------------------- configuration

    /// <summary>The base quantization this method trains against when --quant is not given.</summary>
    public virtual BaseQuant DefaultQuant(int? groupSize) => BaseQuant.Parse("nf4-dq");

    /// <summary>The method's settings when a configuration carries none (for a base quantized as <paramref name="quant"/>); null for a method without settings.</summary>
    public virtual MethodSettings? DefaultSettings(BaseQuant quant) => null;

    /// <summary>Whether the method has a LoRA A matrix that LoRA-FA can freeze (its options then include the switch).</summary>
    public virtual bool CanFreezeA => false;

    /// <summary>Checks the method's knobs against the base quantization it will train on; throws FormatException.</summary>
    public virtual void ValidateOptions(AdapterConfig a, BaseQuant quant) { }

    /// <summary>
    /// Checks a loaded or constructed configuration against a base model; throws <see cref="ModelFormatException"/>
    /// naming <paramref name="source"/> and the config field.
    /// </summary>
    public virtual void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source) { }

    /// <summary>Targets of a config file that lists none (PEFT's default for LoRA is q and v).</summary>
    public virtual TargetModule[] TargetsWhenUnlisted => [TargetModule.Q, TargetModule.V];

    /// <summary>The targets `train` adapts when --targets is not given; null for every linear.</summary>
    public virtual TargetModule[]? DefaultTrainTargets => null;

    /// <summary>Writes the method's own fields into vkpeft_adapter.json.</summary>
    public abstract void WriteConfig(Utf8JsonWriter w, AdapterConfig a);

    /// <summary>Reads the method's own fields of vkpeft_adapter.json into <paramref name="common"/> (targets, base quantization, base model).</summary>
    public abstract AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common);

    /// <summary>Why a PEFT adapter folder (adapter_config.json) cannot hold this method; null when it can (PEFT type LORA).</summary>
    public virtual string? PeftUnsupportedReason => $"PEFT folders cannot hold {CliName} adapters; use the vkpeft adapter format";

    /// <summary>Why a GGUF LoRA file cannot hold this method; null when it can.</summary>
    public virtual string? GgufLoraUnsupportedReason => $"GGUF LoRA files cannot hold {CliName} adapters; use the vkpeft adapter format";

    // ---------------------------------------------------------------- parameters

    /// <summary>Every trainable tensor, in the order they are created (which is the optimizer-state order).</summary>
    public abstract IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a);

    /// <summary>
    /// Adds freshly initialized tensors of <see cref="Parameters"/> to <paramref name="p"/>: one seeded stream, values
    /// drawn tensor by tensor in spec order (zeros and constants draw nothing); trained tensors share one packed block,
    /// frozen ones (no gradient, no optimizer state) another. Tensors initialized from the base weights
    /// (<see cref="ParameterInit.BaseRowNorms"/>) are computed on the device from <paramref name="baseModel"/>.
    /// </summary>
    public void Initialize(TrainableParameters p, LlamaConfig c, AdapterConfig a, int seed, DeviceLlama? baseModel = null)
    {
        var trained = new List<(string, long[], float[])>();
        var frozen = new List<(string, long[], float[])>();
        foreach (var (spec, data) in InitialValues(c, a, seed))
            (spec.Frozen ? frozen : trained).Add((spec.Name, spec.Shape, data));
        p.AddAll(trained);   // one packed block with gradients and optimizer state
        if (frozen.Count > 0) p.AddAll(frozen, frozen: true);
        foreach (var spec in Parameters(c, a))
            if (spec.Init is ParameterInit.BaseRowNorms rn)
            {
                if (baseModel == null) throw new ArgumentException($"{CliName}: '{spec.Name}' starts at the base weight's row norms; pass the base model", nameof(baseModel));
                baseModel.Layers[rn.Layer].Linear(rn.Target).RowNorms(p.ByName[spec.Name].Param);
            }
    }

    /// <summary>
    /// The initial value of every tensor of <see cref="Parameters"/>: one seeded stream, values drawn tensor by tensor
    /// in spec order (zeros and constants draw nothing). Also what a ReLoRA restart re-initializes to.
    /// </summary>
    public IEnumerable<(ParameterSpec Spec, float[] Data)> InitialValues(LlamaConfig c, AdapterConfig a, int seed)
    {
        var rng = new Random(seed);
        foreach (var spec in Parameters(c, a))
        {
            var data = new float[spec.Count];
            switch (spec.Init)
            {
                case ParameterInit.Uniform u:
                    for (long i = 0; i < data.LongLength; i++) data[i] = (float)(rng.NextDouble() * 2 - 1) * u.Bound;
                    break;
                case ParameterInit.Constant k:
                    Array.Fill(data, k.Value);
                    break;
                case ParameterInit.Normal n:
                    // Box–Muller: two uniform draws per value, the cosine branch only (one stream order, whatever the count).
                    for (long i = 0; i < data.LongLength; i++)
                        data[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())) * n.Std;
                    break;
            }
            yield return (spec, data);
        }
    }

    /// <summary>
    /// After <see cref="Initialize"/>, for tensors that start from the base model itself (prompt tuning from vocabulary
    /// or text embeddings): overwrites them from <paramref name="model"/>. Nothing by default.
    /// </summary>
    public virtual void InitializeFromBase(TrainableParameters p, DeviceLlama model, AdapterConfig a, int seed) { }

    /// <summary>The configuration with whatever it needs from the tokenizer resolved (an initialization text's token ids); unchanged by default.</summary>
    public virtual AdapterConfig WithTokenizer(AdapterConfig a, Tokenizers.ITextTokenizer tokenizer) => a;

    // ---------------------------------------------------------------- runtime

    /// <summary>The device runtime that applies (inference) and trains the adapter whose tensors are in <paramref name="p"/>.</summary>
    public abstract ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows);

    // ---------------------------------------------------------------- merge

    /// <summary>Why the adapter cannot be merged into the base's linear weights; null when <see cref="MergeDelta"/> gives its update.</summary>
    public virtual string? NotMergeableReason => null;

    /// <summary>
    /// ΔW [out, in] in float64 for one linear (rows in the base layout) given the base weight it is added to; null when
    /// the method leaves this linear unchanged. The merged weight is W + ΔW rounded once to float32.
    /// </summary>
    public virtual double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight) =>
        throw new InvalidOperationException(NotMergeableReason ?? $"{CliName} has no merge rule");

    /// <summary>
    /// The merged model's tensors other than the linear weights, after the linears are merged: the method's changes to
    /// norms or biases and the config flags they need (norm and bias tuning), or <paramref name="merged"/> itself (the default).
    /// </summary>
    public virtual MergedModel MergeOther(MergedModel merged, AdapterWeights adapter) => merged;

    /// <summary>
    /// A merge straight into the quantized form <paramref name="format"/>/<paramref name="dtype"/> asks for that adds no
    /// rounding (QA-LoRA into its INT4 groups), or null when the method has none for it (the dense merge is used).
    /// </summary>
    public virtual MergedModel? LosslessMerge(LlamaConfig c, LlamaWeights weights, AdapterWeights adapter, ExportFormat format, ExportDType dtype,
        MergeFrom from, ICollection<string>? notes) => null;

    /// <summary>
    /// The adapter as a plain LoRA (rank, scaling, A and B) for the LoRA-only formats (GGUF LoRA), with a note of what that
    /// costs; null when the method has no such form (see <see cref="GgufLoraUnsupportedReason"/>).
    /// </summary>
    public virtual AdapterWeights? AsPlainLora(AdapterWeights adapter, LlamaConfig c, ICollection<string>? notes) => null;

    // ---------------------------------------------------------------- memory model

    /// <summary>Why the memory model does not cover this method yet; null when it does.</summary>
    public virtual string? NotPlanned => null;

    /// <summary>Rows the trainer adds to every sequence for this method (virtual tokens); 0 by default.</summary>
    public virtual int ExtraRowsPerSequence(TrainSetup s) => 0;

    /// <summary>Activation buffers the trainer allocates for this method, for <paramref name="rows"/> tokens.</summary>
    public virtual IEnumerable<MethodMemoryTerm> ActivationTerms(TrainSetup s, long rows) => [];

    /// <summary>Workspace (scratch) buffers of the method's runtime, for <paramref name="rows"/> tokens.</summary>
    public virtual IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows) => [];

    /// <summary>The adapter configuration a planned or measured setup trains.</summary>
    public virtual AdapterConfig ConfigFor(TrainSetup s) => new() { Method = this, Targets = s.Targets, BaseQuant = s.Quant };

    /// <summary>
    /// The inverse of <see cref="ConfigFor"/>: <paramref name="s"/> describing the adapter <paramref name="a"/> trains (its
    /// targets and settings; LoRA-style methods also fill the planner's rank, dropout and similar knobs).
    /// </summary>
    public virtual TrainSetup SetupFor(TrainSetup s, AdapterConfig a) => s with { Targets = a.Targets, Settings = a.Settings };

    // ---------------------------------------------------------------- command line

    /// <summary>The options `train` offers for this method.</summary>
    public virtual IReadOnlyList<MethodOption> Options => [];
}
