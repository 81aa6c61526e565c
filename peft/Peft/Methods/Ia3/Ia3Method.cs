// (IA)³: learned vectors that rescale linear outputs (k_proj, v_proj by default: y ← (W·x) ⊙ l, l [out, 1]) or, for
// the feed-forward targets (down_proj by default), the linear's input (y ← W·(x ⊙ l), l [1, in]), all starting at ones
// so a fresh adapter is the base model exactly. Knobs --targets (default k,v,down) and --feedforward (default down, a
// subset of the targets). Mergeable: output scaling multiplies W's rows by l, input scaling its columns. k_proj's
// vector follows k's output rows (applied before RoPE, as PEFT scales the module output).
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Ia3;

/// <summary>(IA)³'s own configuration: which targets are feed-forward (input-scaled) rather than output-scaled.</summary>
public sealed record Ia3Settings(TargetModule[] Feedforward) : MethodSettings;

public sealed class Ia3Method : PeftMethod
{
    /// <summary>PEFT's Llama defaults: target_modules k_proj, v_proj, down_proj; feedforward_modules down_proj.</summary>
    public static readonly TargetModule[] DefaultTargets = [TargetModule.K, TargetModule.V, TargetModule.Down];

    public static readonly TargetModule[] DefaultFeedforward = [TargetModule.Down];

    public override string Name => "ia3";

    public override IReadOnlyList<string> Aliases => ["(ia)3"];

    public override TargetModule[]? DefaultTrainTargets => DefaultTargets;

    public override TargetModule[] TargetsWhenUnlisted => DefaultTargets;

    public static TargetModule[] Feedforward(AdapterConfig a) => a.SettingsOf<Ia3Settings>().Feedforward;

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new Ia3Settings(DefaultFeedforward);

    /// <summary>Whether target <paramref name="t"/> scales the linear's input (a feed-forward target) rather than its output.</summary>
    public static bool ScalesInput(AdapterConfig a, TargetModule t) => Feedforward(a).Contains(t);

    /// <summary>Canonical name of a target's vector: <c>layers.{i}.{t}.ia3_l</c>.</summary>
    public static string VectorName(int layer, TargetModule t) => $"layers.{layer}.{AdapterWeights.TargetName(t)}.ia3_l";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        if (a.Targets.Length == 0) throw new SettingException($"{AdapterSettings.Targets}: (IA)³ needs at least one target");
        foreach (var f in Feedforward(a))
            if (!a.Targets.Contains(f))
                throw new SettingException($"{FeedforwardOption.Flag}: {AdapterConfig.HfName(f)} is not among the {AdapterSettings.Targets} (feed-forward modules must be a subset of the targets)");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        if (a.Targets.Length == 0) throw new ModelFormatException(source, "target_modules", "(IA)³ needs at least one target");
        foreach (var f in Feedforward(a))
            if (!a.Targets.Contains(f))
                throw new ModelFormatException(source, "feedforward_modules", $"{AdapterConfig.HfName(f)} is not in target_modules");
        foreach (var t in a.Targets.Where(t => !ScalesInput(a, t) && baseConfig.HasBias(t)))
            throw new ModelFormatException(source, "target_modules", $"(IA)³ output scaling of {AdapterConfig.HfName(t)} would have to scale its bias too; this base has {AdapterConfig.HfName(t)} biases");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        w.WriteStartArray("feedforward_modules");
        foreach (var f in Feedforward(a)) w.WriteStringValue(AdapterConfig.HfName(f));
        w.WriteEndArray();
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        TargetModule[] ff = [.. DefaultFeedforward.Where(common.Targets.Contains)];
        if (root.TryGetProperty("feedforward_modules", out var f))
        {
            if (f.ValueKind != JsonValueKind.Array) throw new ModelFormatException(file, "feedforward_modules", "must be a list of module names");
            try
            {
                var names = f.EnumerateArray().Select(e => e.GetString() ?? "").ToArray();
                ff = names.Length == 0 ? [] : AdapterConfig.ParseTargetList(string.Join(',', names), out var error) ?? throw new ModelFormatException(file, "feedforward_modules", error);
            }
            catch (InvalidOperationException e) { throw new ModelFormatException(file, "feedforward_modules", e.Message); }
        }
        return common with { Settings = new Ia3Settings(ff) };
    }

    /// <summary>PEFT folders hold (IA)³ as peft_type IA3 (written by AdapterIO).</summary>
    public override string? PeftUnsupportedReason => null;

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold (IA)³ (llama.cpp has no IA3 adapter type and diag(l)·W − W is not low-rank); export a merged model instead";

    /// <summary>Per layer and target, a vector of ones: [out, 1] for output scaling, [1, in] for input scaling.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var list = new List<ParameterSpec>();
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in Enum.GetValues<TargetModule>().Where(a.Targets.Contains))
            {
                var (outF, inF) = c.LinearShape(t);
                list.Add(ScalesInput(a, t)
                    ? new ParameterSpec(VectorName(l, t), [1, inF], new ParameterInit.Constant(1f))
                    : new ParameterSpec(VectorName(l, t), [outF, 1], new ParameterInit.Constant(1f), OutputRowsOf: t));
            }
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new Ia3Runtime(ctx, c, a, p, maxRows);

    /// <summary>Output scaling: ΔW[i, j] = (l[i] − 1)·W[i, j]; input scaling: ΔW[i, j] = (l[j] − 1)·W[i, j].</summary>
    public override double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight)
    {
        var a = adapter.Config;
        if (!a.Targets.Contains(t)) return null;
        var l = adapter.Tensors[VectorName(layer, t)].Data;
        var (outF, inF) = c.LinearShape(t);
        bool input = ScalesInput(a, t);
        var delta = new double[baseWeight.Length];
        for (long i = 0; i < outF; i++)
            for (long j = 0; j < inF; j++)
                delta[i * inF + j] = ((double)(input ? l[j] : l[i]) - 1) * baseWeight[(int)(i * inF + j)];
        return delta;
    }

    /// <summary>
    /// The unscaled outputs of every output-scaled target, kept per layer for the vectors' gradients; with an input
    /// transform at down, the trainer's ∂swiglu [rows, hidden] apart from swiglu.
    /// </summary>
    public override IEnumerable<MethodMemoryTerm> ActivationTerms(TrainSetup s, long rows)
    {
        var a = ConfigFor(s);
        long width = a.Targets.Where(t => !ScalesInput(a, t)).Sum(t => (long)s.Config.LinearShape(t).Out);
        yield return new MethodMemoryTerm("(IA)³ unscaled outputs", MemoryCategory.Activations, s.Config.NLayers * MemoryModel.F32(rows * width));
        if (a.Targets.Contains(TargetModule.Down) && ScalesInput(a, TargetModule.Down))
            yield return new MethodMemoryTerm("∂swiglu (input transform at down)", MemoryCategory.Activations, MemoryModel.F32(rows * s.Config.HiddenDim));
    }

    /// <summary>Three scratch buffers [rows, widest scaled side] (scaled input or unscaled output, broadcast vector, product) and a ones column.</summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        long width = Ia3Runtime.ScratchWidth(s.Config, ConfigFor(s));
        yield return new MethodMemoryTerm("(IA)³ scratch", MemoryCategory.Workspace, 3 * MemoryModel.F32(rows * width) + MemoryModel.F32(rows));
    }

    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with { Settings = new Ia3Settings([.. DefaultFeedforward.Where(s.Targets.Contains)]) };

    public static readonly MethodOption FeedforwardOption =
        new("--feedforward", "(IA)³ targets scaled on their input (default down); the rest of --targets scale their output", "down", (a, v) => a with
        {
            Settings = new Ia3Settings(string.Equals(v.Trim(), "none", StringComparison.OrdinalIgnoreCase) ? []
                : AdapterConfig.ParseTargetList(v, out var error) ?? throw new FormatException(error)),
        });

    private static readonly MethodOption[] Ia3Options = [FeedforwardOption];

    public override IReadOnlyList<MethodOption> Options => Ia3Options;
}
