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

public sealed class BottleneckMethod : PeftMethod
{
    public override string Name => "adapter";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        if (a.Dropout is < 0 or >= 1) throw new FormatException($"--dropout must be in [0, 1), got {a.Dropout}");
        if (a.Bottleneck < 1) throw new FormatException($"--bottleneck must be ≥ 1, got {a.Bottleneck}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        if (a.Bottleneck <= 0) throw new ModelFormatException(source, "bottleneck", $"must be positive, got {a.Bottleneck}");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        w.WriteString("bottleneck_kind", a.BottleneckKind.ToString().ToLowerInvariant());
        w.WriteNumber("bottleneck", a.Bottleneck);
        w.WriteString("activation", a.Activation.ToString().ToLowerInvariant());
        w.WriteNumber("adapter_scale", a.AdapterScale);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common) => common with
    {
        BottleneckKind = ParseEnum(file, root, "bottleneck_kind", BottleneckKind.Houlsby),
        Bottleneck = Int(file, root, "bottleneck") ?? 16,
        Activation = ParseEnum(file, root, "activation", BottleneckActivation.Silu),
        AdapterScale = (float)(Dbl(root, "adapter_scale") ?? 4),
    };

    public override TargetModule[] TargetsWhenUnlisted => [];

    public override string PeftUnsupportedReason => "PEFT LoRA folders cannot hold a bottleneck adapter; use the vkpeft adapter format";

    public override string GgufLoraUnsupportedReason => "GGUF LoRA files cannot hold a bottleneck adapter; use the vkpeft adapter format";

    /// <summary>The sites of a configuration: Houlsby has attn and mlp, parallel has mlp only.</summary>
    public static string[] Sites(AdapterConfig a) => a.BottleneckKind == BottleneckKind.Houlsby ? [BottleneckRuntime.AttnSite, BottleneckRuntime.MlpSite] : [BottleneckRuntime.MlpSite];

    /// <summary>Per layer and site: down [b, dim] ~ U(−1/√dim, 1/√dim) (kaiming-uniform, a=√5), down_bias [b], up [dim, b], up_bias [dim] zero.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var list = new List<ParameterSpec>();
        float bound = 1f / MathF.Sqrt(c.Dim);
        for (int l = 0; l < c.NLayers; l++)
            foreach (var site in Sites(a))
            {
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "down"), [a.Bottleneck, c.Dim], new ParameterInit.Uniform(bound)));
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "down_bias"), [a.Bottleneck], new ParameterInit.Zeros()));
                list.Add(new ParameterSpec(AdapterWeights.Bottleneck(l, site, "up"), [c.Dim, a.Bottleneck], new ParameterInit.Zeros()));
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

    private static readonly MethodOption[] BottleneckOptions =
    [
        new("--adapter-kind", "houlsby or parallel (--method adapter)", "houlsby", (a, v) => a with
        {
            BottleneckKind = v.ToLowerInvariant() switch
            {
                "houlsby" => BottleneckKind.Houlsby,
                "parallel" => BottleneckKind.Parallel,
                var other => throw new FormatException($"--adapter-kind: unknown kind '{other}' (use houlsby or parallel)"),
            },
        }),
        new("--bottleneck", "Bottleneck adapter size", "16", (a, v) => a with { Bottleneck = MethodOption.Int("--bottleneck", v) }),
        new("--activation", "Bottleneck activation: relu, silu or gelu", "silu", (a, v) => a with
        {
            Activation = v.ToLowerInvariant() switch
            {
                "relu" => BottleneckActivation.Relu,
                "silu" => BottleneckActivation.Silu,
                "gelu" => BottleneckActivation.Gelu,
                var other => throw new FormatException($"--activation: unknown activation '{other}' (use relu, silu or gelu)"),
            },
        }),
        new("--adapter-scale", "Parallel adapter output scale s", "4", (a, v) => a with { AdapterScale = MethodOption.Float("--adapter-scale", v) }),
    ];

    public override IReadOnlyList<MethodOption> Options => BottleneckOptions;
}
