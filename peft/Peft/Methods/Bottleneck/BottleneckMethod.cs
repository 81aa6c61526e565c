// Bottleneck adapters as one method: Houlsby (serial, after attention and after the MLP) or parallel (beside the MLP,
// scaled by s). Knobs --adapter-kind, --bottleneck, --activation, --adapter-scale; per layer and site down [b, dim]
// (kaiming-uniform), down_bias, up, up_bias (zero: a fresh adapter leaves the base unchanged). Not mergeable.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Bottleneck;

/// <summary>Bottleneck adapter placement: Houlsby (serial, after attention and after the MLP) or parallel to the MLP.</summary>
public enum BottleneckKind { Houlsby, Parallel }

public enum BottleneckActivation { Relu, Silu, Gelu }

/// <summary>The bottleneck adapters' configuration: placement, bottleneck size b, activation and the parallel output scale.</summary>
public sealed record BottleneckSettings : MethodSettings
{
    public BottleneckKind Kind { get; init; } = BottleneckKind.Houlsby;
    /// <summary>Bottleneck size b (the down-projection's rows).</summary>
    public int Bottleneck { get; init; } = 16;
    public BottleneckActivation Activation { get; init; } = BottleneckActivation.Silu;
    /// <summary>Parallel adapter output scale s (He et al. use 4.0).</summary>
    public float Scale { get; init; } = 4f;
}

public sealed class BottleneckMethod : PeftMethod
{
    public override string Name => "adapter";

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new BottleneckSettings();

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        int b = a.SettingsOf<BottleneckSettings>().Bottleneck;
        if (b < 1) throw new FormatException($"{BottleneckOption.Flag} must be ≥ 1, got {b}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        int b = a.SettingsOf<BottleneckSettings>().Bottleneck;
        if (b <= 0) throw new ModelFormatException(source, "bottleneck", $"must be positive, got {b}");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        var s = a.SettingsOf<BottleneckSettings>();
        w.WriteString("bottleneck_kind", s.Kind.ToString().ToLowerInvariant());
        w.WriteNumber("bottleneck", s.Bottleneck);
        w.WriteString("activation", s.Activation.ToString().ToLowerInvariant());
        w.WriteNumber("adapter_scale", s.Scale);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common) => common with
    {
        Settings = new BottleneckSettings
        {
            Kind = ParseEnum(file, root, "bottleneck_kind", BottleneckKind.Houlsby),
            Bottleneck = Int(file, root, "bottleneck") ?? 16,
            Activation = ParseEnum(file, root, "activation", BottleneckActivation.Silu),
            Scale = (float)(Dbl(root, "adapter_scale") ?? 4),
        },
    };

    public override TargetModule[] TargetsWhenUnlisted => [];

    public override string PeftUnsupportedReason => "PEFT LoRA folders cannot hold a bottleneck adapter; use the vkpeft adapter format";

    public override string GgufLoraUnsupportedReason => "GGUF LoRA files cannot hold a bottleneck adapter; use the vkpeft adapter format";

    /// <summary>The sites of a configuration: Houlsby has attn and mlp, parallel has mlp only.</summary>
    public static string[] Sites(AdapterConfig a) => a.SettingsOf<BottleneckSettings>().Kind == BottleneckKind.Houlsby ? [BottleneckRuntime.AttnSite, BottleneckRuntime.MlpSite] : [BottleneckRuntime.MlpSite];

    /// <summary>Per layer and site: down [b, dim] ~ U(−1/√dim, 1/√dim) (kaiming-uniform, a=√5), down_bias [b], up [dim, b], up_bias [dim] zero.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        int b = a.SettingsOf<BottleneckSettings>().Bottleneck;
        var list = new List<ParameterSpec>();
        float bound = 1f / MathF.Sqrt(c.Dim);
        for (int l = 0; l < c.NLayers; l++)
            foreach (var site in Sites(a))
            {
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "down"), [b, c.Dim], new ParameterInit.Uniform(bound)));
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "down_bias"), [b], new ParameterInit.Zeros()));
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "up"), [c.Dim, b], new ParameterInit.Zeros()));
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "up_bias"), [c.Dim], new ParameterInit.Zeros()));
            }
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new BottleneckRuntime(ctx, c, a, p, maxRows);

    public override string NotMergeableReason =>
        "bottleneck adapters cannot be merged into linear weights (they add a nonlinear block after attention/MLP); " +
        "export the adapter itself (format vkpeft) and apply it at run time";

    public override string NotPlanned => "bottleneck adapters (--method adapter)";

    /// <summary>The trainer's block-hook gradient buffers dz and dh_adapter, [rows, dim] each.</summary>
    public override IEnumerable<MethodMemoryTerm> ActivationTerms(TrainSetup s, long rows)
    {
        yield return new MethodMemoryTerm("dz, dh_adapter (block hooks)", MemoryCategory.Activations, 2 * MemoryModel.F32(rows * s.Config.Dim));
    }

    /// <summary>The planner's bottleneck size (<see cref="TrainSetup.Settings"/> wins when it is this method's).</summary>
    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Settings = s.Settings as BottleneckSettings ?? new BottleneckSettings { Bottleneck = s.Bottleneck },
    };

    public override TrainSetup SetupFor(TrainSetup s, AdapterConfig a) =>
        base.SetupFor(s, a) with { Bottleneck = a.SettingsOf<BottleneckSettings>().Bottleneck };

    /// <summary><paramref name="a"/> with its bottleneck settings changed.</summary>
    private static AdapterConfig With(AdapterConfig a, Func<BottleneckSettings, BottleneckSettings> change) =>
        a with { Settings = change(a.SettingsOf<BottleneckSettings>()) };

    public static readonly MethodOption BottleneckOption =
        new("--bottleneck", "Bottleneck adapter size", "16", (a, v) => With(a, s => s with { Bottleneck = MethodOption.Int(v) }));

    private static readonly MethodOption[] BottleneckOptions =
    [
        new("--adapter-kind", "houlsby or parallel (--method adapter)", "houlsby", (a, v) => With(a, s => s with
        {
            Kind = v.ToLowerInvariant() switch
            {
                "houlsby" => BottleneckKind.Houlsby,
                "parallel" => BottleneckKind.Parallel,
                var other => throw new FormatException($"unknown kind '{other}' (use houlsby or parallel)"),
            },
        })),
        BottleneckOption,
        new("--activation", "Bottleneck activation: relu, silu or gelu", "silu", (a, v) => With(a, s => s with
        {
            Activation = v.ToLowerInvariant() switch
            {
                "relu" => BottleneckActivation.Relu,
                "silu" => BottleneckActivation.Silu,
                "gelu" => BottleneckActivation.Gelu,
                var other => throw new FormatException($"unknown activation '{other}' (use relu, silu or gelu)"),
            },
        })),
        new("--adapter-scale", "Parallel adapter output scale s", "4", (a, v) => With(a, s => s with { Scale = MethodOption.Float(v) })),
    ];

    public override IReadOnlyList<MethodOption> Options => BottleneckOptions;
}
