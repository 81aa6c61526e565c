// Prefix tuning / P-tuning v2 (PEFT PREFIX_TUNING): per layer n learned keys and values
// [n, kv_dim] placed in the attention's key/value cache before the real tokens — one softmax over prefix and sequence,
// prefix keys never rotated by RoPE, real tokens at positions n…n+T−1, grouped-query models at the K/V width — as PEFT
// and transformers do. Initialized N(0, 1) like PEFT's prefix embedding. Not mergeable. Saved in PEFT's layout: one
// prompt_embeddings [n, num_layers·2·kv_dim] whose row holds, per layer, the keys (in rotate-half order within each
// head, as Hugging Face caches them) then the values; PEFT saves the computed prefix whether or not it trained through a
// projection MLP, so folders written either way load. With --prefix-projection (Li & Liang's reparameterization, PEFT's
// PrefixEncoder) the trainable tensors are instead a virtual-token embedding [n, token_dim] and a two-layer MLP
// (Linear token_dim→hidden, tanh, Linear hidden→num_layers·2·token_dim, with biases) whose output is the prefix, computed
// on the device each forward (PrefixProjection); token_dim is the K/V width, as PEFT rewrites it for grouped-query
// models, and hidden defaults to it (PEFT's encoder_hidden_size). vkpeft's own adapter keeps the MLP (resume, continued
// training); the PEFT folder holds the computed prefix, as PEFT saves it.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Prefix;

/// <summary>
/// Prefix tuning's own configuration: the prefix length n (PEFT num_virtual_tokens), whether it trains through the
/// projection MLP (PEFT prefix_projection) and that MLP's hidden width (PEFT encoder_hidden_size; null: token_dim).
/// </summary>
public sealed record PrefixSettings(int VirtualTokens, bool Projection = false, int? HiddenSize = null) : MethodSettings
{
    /// <summary>The projection MLP's hidden width for model <paramref name="c"/>: the set size, else token_dim (the K/V width).</summary>
    public int Hidden(LlamaConfig c) => HiddenSize ?? c.KvDim;
}

public sealed class PrefixMethod : PeftMethod
{
    public const int DefaultVirtualTokens = 20;

    public override string Name => "prefix";

    public override IReadOnlyList<string> Aliases => ["prefix-tuning", "prefix_tuning", "p-tuning-v2"];

    public override TargetModule[]? DefaultTrainTargets => [];

    public override TargetModule[] TargetsWhenUnlisted => [];

    public static PrefixSettings Settings(AdapterConfig a) => a.SettingsOf<PrefixSettings>();

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new PrefixSettings(DefaultVirtualTokens);

    /// <summary>Canonical names of layer <paramref name="layer"/>'s prefix keys and values, each [n, kv_dim].</summary>
    public static string KeysName(int layer) => $"layers.{layer}.prefix_keys";
    public static string ValuesName(int layer) => $"layers.{layer}.prefix_values";

    /// <summary>Names of the projection's tensors (PEFT PrefixEncoder's modules): embedding [n, token_dim], first linear
    /// [hidden, token_dim] + [hidden], second linear [num_layers·2·token_dim, hidden] + [num_layers·2, token_dim] (its bias
    /// held as one row per layer's keys and values). Row block 2ℓ·token_dim… of the second linear gives layer ℓ's keys,
    /// block (2ℓ + 1)·token_dim… its values — the packing of PEFT's prompt_embeddings.</summary>
    public const string EmbeddingName = "prefix_encoder.embedding";
    public const string HiddenWeightName = "prefix_encoder.transform.0.weight";
    public const string HiddenBiasName = "prefix_encoder.transform.0.bias";
    public const string OutputWeightName = "prefix_encoder.transform.2.weight";
    public const string OutputBiasName = "prefix_encoder.transform.2.bias";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        var s = Settings(a);
        if (s.VirtualTokens < 1) throw new FormatException($"{VirtualTokensOption.Flag} must be ≥ 1, got {s.VirtualTokens}");
        if (s.HiddenSize is { } h && !s.Projection) throw new FormatException($"{HiddenOption.Flag} sets the projection MLP's width: it needs {ProjectionOption.Flag}");
        if (s.HiddenSize is < 1) throw new FormatException($"{HiddenOption.Flag} must be ≥ 1, got {s.HiddenSize}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        int n = Settings(a).VirtualTokens;
        if (n < 1) throw new ModelFormatException(source, "num_virtual_tokens", $"must be ≥ 1, got {n}");
        if (baseConfig.MaxSeqLen > 0 && n >= baseConfig.MaxSeqLen)
            throw new ModelFormatException(source, "num_virtual_tokens", $"a prefix of {n} leaves no room in the model's context of {baseConfig.MaxSeqLen}");
        var s = Settings(a);
        if (s.HiddenSize is { } h && !s.Projection)
            throw new ModelFormatException(source, "encoder_hidden_size", "is set but prefix_projection is false");
        if (s.HiddenSize is < 1) throw new ModelFormatException(source, "encoder_hidden_size", $"must be ≥ 1, got {s.HiddenSize}");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        var s = Settings(a);
        w.WriteNumber("num_virtual_tokens", s.VirtualTokens);
        if (!s.Projection) return;
        w.WriteBoolean("prefix_projection", true);
        if (s.HiddenSize is { } h) w.WriteNumber("encoder_hidden_size", h);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        int n = Int(file, root, "num_virtual_tokens") ?? throw new ModelFormatException(file, "num_virtual_tokens", "required field is missing");
        bool projection = Bool(root, "prefix_projection") ?? false;
        int? hidden = Int(file, root, "encoder_hidden_size");
        return common with { Targets = [], Settings = new PrefixSettings(n, projection, hidden) };
    }

    /// <summary>PEFT folders hold prefix tuning as peft_type PREFIX_TUNING (written by AdapterIO).</summary>
    public override string? PeftUnsupportedReason => null;

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold prefix tuning (learned keys and values are extra cache entries, not a weight change; llama.cpp has no prefix adapter type); use --format peft";

    public override string NotMergeableReason =>
        "prefix tuning cannot be merged into the model: its learned keys and values are extra attention inputs, not a change to any weight; use --format peft";

    /// <summary>
    /// Per layer, keys then values [n, kv_dim], N(0, 1) as PEFT's prefix embedding starts. With the projection: the
    /// embedding N(0, 1) (nn.Embedding) and each linear's weight and bias U(±1/√fan_in) (nn.Linear's default).
    /// </summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var s = Settings(a);
        int n = s.VirtualTokens;
        if (s.Projection)
        {
            int hidden = s.Hidden(c);
            float inBound = 1f / MathF.Sqrt(c.KvDim), outBound = 1f / MathF.Sqrt(hidden);
            return
            [
                new ParameterSpec(EmbeddingName, [n, c.KvDim], new ParameterInit.Normal(1f)),
                new ParameterSpec(HiddenWeightName, [hidden, c.KvDim], new ParameterInit.Uniform(inBound)),
                new ParameterSpec(HiddenBiasName, [hidden], new ParameterInit.Uniform(inBound)),
                new ParameterSpec(OutputWeightName, [2L * c.NLayers * c.KvDim, hidden], new ParameterInit.Uniform(outBound)),
                new ParameterSpec(OutputBiasName, [2L * c.NLayers, c.KvDim], new ParameterInit.Uniform(outBound)),
            ];
        }
        var list = new List<ParameterSpec>();
        for (int l = 0; l < c.NLayers; l++)
        {
            list.Add(new ParameterSpec(KeysName(l), [n, c.KvDim], new ParameterInit.Normal(1f)));
            list.Add(new ParameterSpec(ValuesName(l), [n, c.KvDim], new ParameterInit.Normal(1f)));
        }
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new PrefixRuntime(ctx, c, a, p);

    /// <summary>The prefix rides in n extra rows per sequence (see AttentionPrefixRows), counted by the memory model as rows.</summary>
    public override int ExtraRowsPerSequence(TrainSetup s) => Settings(ConfigFor(s)).VirtualTokens;

    /// <summary>The projection's scratch: pre-activation, tanh output and their gradients [n, hidden], the computed prefix [2·num_layers, n, kv_dim] and the batch's ∂keys and ∂values sums [2, n, kv_dim].</summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        var settings = Settings(ConfigFor(s));
        if (!settings.Projection) yield break;
        long n = settings.VirtualTokens, hidden = settings.Hidden(s.Config);
        yield return new MethodMemoryTerm("prefix projection hidden", MemoryCategory.Workspace, 4 * 4 * n * hidden);
        yield return new MethodMemoryTerm("prefix projection output and gradient sums", MemoryCategory.Workspace, 4 * 2L * (s.Config.NLayers + 1) * n * s.Config.KvDim);
    }

    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Targets = [], Settings = s.Settings as PrefixSettings ?? new PrefixSettings(DefaultVirtualTokens),
    };

    private const string AutoHidden = "auto";

    public static readonly MethodOption VirtualTokensOption =
        new("--virtual-tokens", "Prompt and prefix tuning: virtual tokens (prefix length) n", DefaultVirtualTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
            (a, v) => a with { Settings = Settings(a) with { VirtualTokens = MethodOption.Int(v) } });

    public static readonly MethodOption ProjectionOption =
        new("--prefix-projection", "Prefix tuning: train through PEFT's reparameterization MLP (embedding → Linear → tanh → Linear); saves the computed prefix", null,
            (a, v) => a with { Settings = Settings(a) with { Projection = bool.Parse(v) } });

    public static readonly MethodOption HiddenOption =
        new("--prefix-hidden", "Prefix tuning with --prefix-projection: the MLP's hidden width (PEFT encoder_hidden_size; auto: the K/V width)", AutoHidden,
            (a, v) => a with { Settings = Settings(a) with { HiddenSize = v == AutoHidden ? null : MethodOption.Int(v) } });

    private static readonly MethodOption[] PrefixOptions = [VirtualTokensOption, ProjectionOption, HiddenOption];

    public override IReadOnlyList<MethodOption> Options => PrefixOptions;
}
