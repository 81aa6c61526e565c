// A toy PEFT method defined entirely in this folder, proving the method seam: one trainable scalar per layer that
// scales the output of one target linear, y ← s·(x·Wᵀ) (--scale-side output, an after-linear transform), or its input,
// y ← (s·x)·Wᵀ (--scale-side input, a before-linear transform), with s starting at --scale-init. Its own settings record
// and JSON object, one parameter spec, a device runtime for training and inference, a merge rule (W' = s·W either way)
// and memory terms.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Tests.Training.OutputScale;

/// <summary>The toy method's own configuration: the initial scale and whether it scales the linear's output or input.</summary>
public sealed record OutputScaleSettings(float Initial, bool Input = false) : MethodSettings;

public sealed class OutputScaleMethod : PeftMethod
{
    public static readonly OutputScaleMethod Instance = new();

    private OutputScaleMethod() { }

    public override string Name => "output-scale";

    /// <summary>The one linear a configuration scales.</summary>
    public static TargetModule Target(AdapterConfig a) => a.Targets.Length == 1 ? a.Targets[0]
        : throw new FormatException($"output-scale adapts exactly one target, got {a.Targets.Length}");

    public static OutputScaleSettings Settings(AdapterConfig a) => a.Settings as OutputScaleSettings ?? new OutputScaleSettings(1f);

    public static float Initial(AdapterConfig a) => Settings(a).Initial;

    public static string ScaleName(int layer, TargetModule t) => $"layers.{layer}.{AdapterWeights.TargetName(t)}.output_scale";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        Target(a);
        if (!float.IsFinite(Initial(a))) throw new FormatException($"--scale-init must be finite, got {Initial(a)}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        if (a.Targets.Length != 1) throw new ModelFormatException(source, "target_modules", $"output-scale adapts exactly one target, got {a.Targets.Length}");
        if (baseConfig.AttentionBias && a.Targets[0] is TargetModule.Q or TargetModule.K or TargetModule.V)
            throw new ModelFormatException(source, "target_modules", "output-scale does not scale q/k/v biases; choose a linear without a bias");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        w.WriteStartObject("output_scale");
        w.WriteNumber("initial", Initial(a));
        w.WriteString("side", Settings(a).Input ? "input" : "output");
        w.WriteEndObject();
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        if (!root.TryGetProperty("output_scale", out var o) || o.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(file, "output_scale", "required object is missing");
        bool input = JsonFields.Str(o, "side") switch
        {
            null or "output" => false,
            "input" => true,
            var other => throw new ModelFormatException(file, "output_scale.side", $"'{other}' is not output or input"),
        };
        return common with { Settings = new OutputScaleSettings((float)(JsonFields.Dbl(o, "initial") ?? 1), input) };
    }

    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var t = Target(a);
        return [.. Enumerable.Range(0, c.NLayers).Select(l => new ParameterSpec(ScaleName(l, t), [1], new ParameterInit.Constant(Initial(a))))];
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new OutputScaleRuntime(ctx, c, a, p, maxRows);

    /// <summary>W' = s·W (scaling the output or the input of a linear without bias is the same): ΔW = (s − 1)·W on the target.</summary>
    public override double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight)
    {
        if (t != Target(adapter.Config)) return null;
        double s = adapter.Tensors[ScaleName(layer, t)].Data[0];
        var delta = new double[baseWeight.Length];
        for (int i = 0; i < delta.Length; i++) delta[i] = (s - 1) * baseWeight[i];
        return delta;
    }

    /// <summary>The runtime's per-layer saved pre-scale outputs [rows, out] (training, output side).</summary>
    public override IEnumerable<MethodMemoryTerm> ActivationTerms(TrainSetup s, long rows)
    {
        long outF = s.Config.LinearShape(Target(ConfigFor(s))).Out;
        yield return new MethodMemoryTerm("output-scale saved outputs", MemoryCategory.Activations, s.Config.NLayers * MemoryModel.F32(rows * outF));
    }

    /// <summary>The runtime's scratch, [rows, max(in, out)].</summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        var (outF, inF) = s.Config.LinearShape(Target(ConfigFor(s)));
        yield return new MethodMemoryTerm("output-scale scratch", MemoryCategory.Workspace, MemoryModel.F32(rows * Math.Max(outF, inF)));
    }

    private static readonly MethodOption[] ScaleOptions =
    [
        new("--scale-init", "Initial scale (output-scale)", "1", (a, v) => a with { Settings = Settings(a) with { Initial = MethodOption.Float(v) } }),
        new("--scale-side", "output or input (output-scale)", "output", (a, v) => a with
        {
            Settings = Settings(a) with
            {
                Input = v switch { "output" => false, "input" => true, _ => throw new FormatException($"use output or input, not '{v}'") },
            },
        }),
    ];

    public override IReadOnlyList<MethodOption> Options => ScaleOptions;
}
