// Prefix tuning / P-tuning v2 (PEFT PREFIX_TUNING without prefix_projection): per layer n learned keys and values
// [n, kv_dim] placed in the attention's key/value cache before the real tokens — one softmax over prefix and sequence,
// prefix keys never rotated by RoPE, real tokens at positions n…n+T−1, grouped-query models at the K/V width — as PEFT
// and transformers do. Initialized N(0, 1) like PEFT's prefix embedding. Not mergeable. Saved in PEFT's layout: one
// prompt_embeddings [n, num_layers·2·kv_dim] whose row holds, per layer, the keys (in rotate-half order within each
// head, as Hugging Face caches them) then the values; PEFT saves the computed prefix whether or not it trained through a
// projection MLP, so folders written either way load.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Prefix;

/// <summary>Prefix tuning's own configuration: the prefix length n (PEFT num_virtual_tokens).</summary>
public sealed record PrefixSettings(int VirtualTokens) : MethodSettings;

public sealed class PrefixMethod : PeftMethod
{
    public const int DefaultVirtualTokens = 20;

    public override string Name => "prefix";

    public override IReadOnlyList<string> Aliases => ["prefix-tuning", "prefix_tuning", "p-tuning-v2"];

    public override TargetModule[]? DefaultTrainTargets => [];

    public override TargetModule[] TargetsWhenUnlisted => [];

    public static PrefixSettings Settings(AdapterConfig a) => a.Settings as PrefixSettings ?? new PrefixSettings(DefaultVirtualTokens);

    /// <summary>Canonical names of layer <paramref name="layer"/>'s prefix keys and values, each [n, kv_dim].</summary>
    public static string KeysName(int layer) => $"layers.{layer}.prefix_keys";
    public static string ValuesName(int layer) => $"layers.{layer}.prefix_values";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        int n = Settings(a).VirtualTokens;
        if (n < 1) throw new FormatException($"--virtual-tokens must be ≥ 1, got {n}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        int n = Settings(a).VirtualTokens;
        if (n < 1) throw new ModelFormatException(source, "num_virtual_tokens", $"must be ≥ 1, got {n}");
        if (baseConfig.MaxSeqLen > 0 && n >= baseConfig.MaxSeqLen)
            throw new ModelFormatException(source, "num_virtual_tokens", $"a prefix of {n} leaves no room in the model's context of {baseConfig.MaxSeqLen}");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a) => w.WriteNumber("num_virtual_tokens", Settings(a).VirtualTokens);

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        int n = Int(file, root, "num_virtual_tokens") ?? throw new ModelFormatException(file, "num_virtual_tokens", "required field is missing");
        return common with { Targets = [], Settings = new PrefixSettings(n) };
    }

    /// <summary>PEFT folders hold prefix tuning as peft_type PREFIX_TUNING (written by AdapterIO).</summary>
    public override string? PeftUnsupportedReason => null;

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold prefix tuning (learned keys and values are extra cache entries, not a weight change; llama.cpp has no prefix adapter type); use --format peft";

    public override string NotMergeableReason =>
        "prefix tuning cannot be merged into the model: its learned keys and values are extra attention inputs, not a change to any weight; use --format peft";

    /// <summary>Per layer, keys then values [n, kv_dim], N(0, 1) as PEFT's prefix embedding starts.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        int n = Settings(a).VirtualTokens;
        var list = new List<ParameterSpec>();
        for (int l = 0; l < c.NLayers; l++)
        {
            list.Add(new ParameterSpec(KeysName(l), [n, c.KvDim], new ParameterInit.Normal(1f)));
            list.Add(new ParameterSpec(ValuesName(l), [n, c.KvDim], new ParameterInit.Normal(1f)));
        }
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new PrefixRuntime(c, a, p);

    /// <summary>The prefix rides in n extra rows per sequence (see AttentionPrefixRows), counted by the memory model as rows.</summary>
    public override int ExtraRowsPerSequence(TrainSetup s) => Settings(ConfigFor(s)).VirtualTokens;

    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Targets = [], Settings = s.Settings as PrefixSettings ?? new PrefixSettings(DefaultVirtualTokens),
    };

    private static readonly MethodOption[] PrefixOptions =
    [
        new("--virtual-tokens", "Prompt and prefix tuning: virtual tokens (prefix length) n", DefaultVirtualTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
            (a, v) => a with { Settings = new PrefixSettings(MethodOption.Int("--virtual-tokens", v)) }),
    ];

    public override IReadOnlyList<MethodOption> Options => PrefixOptions;
}
