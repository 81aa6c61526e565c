// LLaMA-Adapter (v1, in Hugging Face PEFT's form): in each of the top --adapter-layers layers a learned adaption prompt
// P [1, adapter_len, dim] is projected by the layer's frozen k/v weights (no RoPE) into prompt keys and values, every
// (rotated) query attends to them in a softmax of its own, and that attention output, times a gate starting at zero, is
// added to the causal attention output before the o-projection — so training starts exactly from the base model.
// The gate is PEFT's: one raw scalar per layer ([1], no tanh). The original code (OpenGVLab alpaca_finetuning_v1) has
// one gate per head passed through tanh; vkpeft trains and loads PEFT's scalar form only. Not mergeable (it changes no
// weight). PEFT type ADAPTION_PROMPT (adaption_prompt, adaption_gate; adapter_len, adapter_layers, target_modules).
using System.Globalization;
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.LlamaAdapter;

/// <summary>LLaMA-Adapter's knobs: prompt positions per layer and how many of the top layers get one (null: every layer).</summary>
public sealed record LlamaAdapterSettings(int AdapterLen, int? AdapterLayers) : MethodSettings;

public sealed class LlamaAdapterMethod : PeftMethod
{
    /// <summary>The official 7B recipe's prompt length (alpaca_finetuning_v1/finetuning.sh: adapter_len 10).</summary>
    public const int DefaultAdapterLen = 10;

    /// <summary>U(−√3, √3): unit variance like PEFT's normal_() initialization of the prompts, from the seeded uniform stream.</summary>
    private static readonly float PromptInitBound = MathF.Sqrt(3f);

    public override string Name => "llama-adapter";

    public override IReadOnlyList<string> Aliases => ["adaption-prompt", "llama_adapter"];

    public static LlamaAdapterSettings Settings(AdapterConfig a) => a.SettingsOf<LlamaAdapterSettings>();

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new LlamaAdapterSettings(DefaultAdapterLen, null);

    /// <summary>Adapted layers: the top <c>adapter_layers</c> of the model's <paramref name="nLayers"/> (all when not set).</summary>
    public static int AdaptedLayers(AdapterConfig a, int nLayers) => Settings(a).AdapterLayers ?? nLayers;

    /// <summary>The first adapted layer.</summary>
    public static int FirstLayer(AdapterConfig a, int nLayers) => nLayers - AdaptedLayers(a, nLayers);

    public static string PromptName(int layer) => $"layers.{layer}.adaption_prompt";

    public static string GateName(int layer) => $"layers.{layer}.adaption_gate";

    public override TargetModule[] TargetsWhenUnlisted => [];

    public override TargetModule[]? DefaultTrainTargets => [];

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        var s = Settings(a);
        if (s.AdapterLen < 1 || s.AdapterLen > AdaptionPrompt.MaxPromptLength)
            throw new FormatException($"{AdapterLenOption.Flag}: {s.AdapterLen} prompt positions; give 1 to {AdaptionPrompt.MaxPromptLength}");
        if (s.AdapterLayers is < 1) throw new FormatException($"{AdapterLayersOption.Flag}: {s.AdapterLayers} layers; give at least 1 (or 'all')");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        var s = Settings(a);
        if (s.AdapterLen < 1 || s.AdapterLen > AdaptionPrompt.MaxPromptLength)
            throw new ModelFormatException(source, "adapter_len", $"{s.AdapterLen} prompt positions; must be 1 to {AdaptionPrompt.MaxPromptLength}");
        if (s.AdapterLayers is { } n && (n < 1 || n > baseConfig.NLayers))
            throw new ModelFormatException(source, "adapter_layers", $"{n} layers, but the base model has {baseConfig.NLayers} (must be 1 to {baseConfig.NLayers})");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        var s = Settings(a);
        w.WriteNumber("adapter_len", s.AdapterLen);
        if (s.AdapterLayers is { } n) w.WriteNumber("adapter_layers", n);
        else w.WriteNull("adapter_layers");
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common) =>
        common with { Targets = [], Settings = ReadSettings(file, root) };

    /// <summary>adapter_len (required) and adapter_layers (a count, or null for every layer) of a vkpeft or PEFT config.</summary>
    public static LlamaAdapterSettings ReadSettings(string file, JsonElement root)
    {
        int len = root.TryGetProperty("adapter_len", out var l) && l.ValueKind == JsonValueKind.Number && l.TryGetInt32(out int x) ? x
            : throw new ModelFormatException(file, "adapter_len", "required whole number is missing or not a whole number");
        int? layers = null;
        if (root.TryGetProperty("adapter_layers", out var n) && n.ValueKind != JsonValueKind.Null)
            layers = n.ValueKind == JsonValueKind.Number && n.TryGetInt32(out int y) ? y
                : throw new ModelFormatException(file, "adapter_layers", "must be a whole number");
        return new LlamaAdapterSettings(len, layers);
    }

    /// <summary>PEFT folders hold LLaMA-Adapter as peft_type ADAPTION_PROMPT (written by AdapterIO).</summary>
    public override string? PeftUnsupportedReason => null;

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold LLaMA-Adapter (gated attention over learned prompts is not a weight update, and llama.cpp has no adapter type for it); export --format peft instead";

    public override string NotMergeableReason =>
        "LLaMA-Adapter cannot be merged into the base weights: its gated attention over learned prompts changes no weight; export --format peft (or run it with --adapter)";

    /// <summary>Per adapted layer the prompt [1, adapter_len, dim] (unit-variance uniform), then per adapted layer the gate [1] (zero).</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var s = Settings(a);
        if (s.AdapterLayers > c.NLayers)
            throw new FormatException($"{AdapterLayersOption.Flag}: {s.AdapterLayers} layers, but the model has {c.NLayers}");
        // Prompts first, then the gates: every prompt starts at a multiple of adapter_len·dim in the packed block, which
        // keeps it row-aligned for the quantized kernels that read it.
        var layers = Enumerable.Range(FirstLayer(a, c.NLayers), AdaptedLayers(a, c.NLayers)).ToArray();
        return [.. layers.Select(l => new ParameterSpec(PromptName(l), [1, s.AdapterLen, c.Dim], new ParameterInit.Uniform(PromptInitBound))),
            .. layers.Select(l => new ParameterSpec(GateName(l), [1], new ParameterInit.Zeros()))];
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new LlamaAdapterRuntime(ctx, c, a, p, maxRows);

    /// <summary>
    /// Nothing per layer (the backward recomputes the prompt attention): probabilities, outputs, score gradients and row
    /// dots for the rows of one layer; prompt keys/values per adapted layer and their gradients.
    /// </summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        var a = ConfigFor(s);
        yield return new MethodMemoryTerm("LLaMA-Adapter scratch", MemoryCategory.Workspace,
            MemoryModel.F32(LlamaAdapterRuntime.WorkspaceElements(s.Config, a, rows)));
    }

    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Targets = [], Settings = new LlamaAdapterSettings(DefaultAdapterLen, null),
    };

    public static readonly MethodOption AdapterLenOption =
        new("--adapter-len", "LLaMA-Adapter prompt positions per adapted layer", DefaultAdapterLen.ToString(CultureInfo.InvariantCulture),
            (a, v) => a with { Settings = Settings(a) with { AdapterLen = MethodOption.Int(v) } });

    public static readonly MethodOption AdapterLayersOption =
        new("--adapter-layers", "LLaMA-Adapter: how many of the top layers get an adaption prompt ('all' for every layer)", "all",
            (a, v) => a with
            {
                Settings = Settings(a) with
                {
                    AdapterLayers = string.Equals(v.Trim(), "all", StringComparison.OrdinalIgnoreCase) ? null : MethodOption.Int(v),
                },
            });

    private static readonly MethodOption[] LlamaAdapterOptions = [AdapterLenOption, AdapterLayersOption];

    public override IReadOnlyList<MethodOption> Options => LlamaAdapterOptions;
}
