// Prompt tuning (soft prompts, Lester et al.; PEFT PROMPT_TUNING): n trainable embedding rows placed before every
// sequence's token embeddings. Virtual tokens take positions 0…n−1 and the real tokens n…n+T−1; they predict nothing, and
// their gradient is the sum over the batch of ∂loss/∂(input embedding) at the virtual positions — only input gradients
// flow through the frozen base. Initialization as PEFT: random N(0, 1), the embeddings of uniformly sampled vocabulary
// ids, or the embeddings of a text's tokens (BOS included, as PEFT's tokenizer call adds it) repeated or cut to n rows.
// Not mergeable: no weight changes. Saved in PEFT's PROMPT_TUNING layout (tensor prompt_embeddings [n, dim]).
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Tokenizers;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Prompt;

/// <summary>How the virtual-token embeddings start (PEFT prompt_tuning_init RANDOM, SAMPLE_VOCAB, TEXT).</summary>
public enum PromptInit { Random, Vocab, Text }

/// <summary>
/// Prompt tuning's own configuration: the virtual-token count n, the initialization, its text and (once a tokenizer
/// resolved it) the text's token ids.
/// </summary>
public sealed record PromptSettings(int VirtualTokens, PromptInit Init = PromptInit.Random, string? InitText = null, int[]? InitTokenIds = null)
    : MethodSettings;

public sealed class PromptMethod : PeftMethod
{
    /// <summary>The one trainable tensor, [n, dim]; also its PEFT name.</summary>
    public const string TensorName = "prompt_embeddings";

    public const int DefaultVirtualTokens = 20;

    public override string Name => "prompt";

    public override IReadOnlyList<string> Aliases => ["prompt-tuning", "prompt_tuning"];

    public override TargetModule[]? DefaultTrainTargets => [];

    public override TargetModule[] TargetsWhenUnlisted => [];

    public static PromptSettings Settings(AdapterConfig a) => a.SettingsOf<PromptSettings>();

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new PromptSettings(DefaultVirtualTokens);

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        var s = Settings(a);
        if (s.VirtualTokens < 1) throw new FormatException($"{VirtualTokensOption.Flag} must be ≥ 1, got {s.VirtualTokens}");
        if (s.Init == PromptInit.Text && string.IsNullOrEmpty(s.InitText)) throw new FormatException($"{InitOption.Flag}: text:\"…\" needs a non-empty text");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        var s = Settings(a);
        if (s.VirtualTokens < 1) throw new ModelFormatException(source, "num_virtual_tokens", $"must be ≥ 1, got {s.VirtualTokens}");
        if (baseConfig.MaxSeqLen > 0 && s.VirtualTokens >= baseConfig.MaxSeqLen)
            throw new ModelFormatException(source, "num_virtual_tokens", $"{s.VirtualTokens} virtual tokens leave no room in the model's context of {baseConfig.MaxSeqLen}");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        var s = Settings(a);
        w.WriteNumber("num_virtual_tokens", s.VirtualTokens);
        w.WriteString("prompt_init", s.Init.ToString().ToLowerInvariant());
        if (s.InitText != null) w.WriteString("prompt_init_text", s.InitText);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        int n = Int(file, root, "num_virtual_tokens") ?? throw new ModelFormatException(file, "num_virtual_tokens", "required field is missing");
        var init = ParseEnum(file, root, "prompt_init", PromptInit.Random);
        return common with { Targets = [], Settings = new PromptSettings(n, init, Str(root, "prompt_init_text")) };
    }

    /// <summary>PEFT folders hold prompt tuning as peft_type PROMPT_TUNING (written by AdapterIO).</summary>
    public override string? PeftUnsupportedReason => null;

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold prompt tuning (soft prompts change the input, not a weight; llama.cpp has no soft-prompt adapter type); use --format peft";

    public override string NotMergeableReason =>
        "prompt tuning cannot be merged into the model: its virtual tokens are extra inputs, not a change to any weight; use --format peft";

    /// <summary>prompt_embeddings [n, dim]: N(0, 1) for random initialization; vocabulary and text rows are copied in by <see cref="InitializeFromBase"/>.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a) =>
        [new ParameterSpec(TensorName, [Settings(a).VirtualTokens, c.Dim], Settings(a).Init == PromptInit.Random ? new ParameterInit.Normal(1f) : new ParameterInit.Zeros())];

    /// <summary>The token ids whose embeddings start the prompt: sampled vocabulary ids, or the text's ids repeated and cut to n; null for random.</summary>
    public static int[]? InitTokenIds(AdapterConfig a, int vocabSize, int seed)
    {
        var s = Settings(a);
        switch (s.Init)
        {
            case PromptInit.Vocab:
                var rng = new Random(seed);
                return [.. Enumerable.Range(0, s.VirtualTokens).Select(_ => rng.Next(vocabSize))];
            case PromptInit.Text:
                var ids = s.InitTokenIds ?? throw new InvalidOperationException("a text initialization needs its token ids: call WithTokenizer first");
                if (ids.Length == 0) throw new FormatException($"{InitOption.Flag}: the text has no tokens");
                return [.. Enumerable.Range(0, s.VirtualTokens).Select(i => ids[i % ids.Length])];
            default:
                return null;
        }
    }

    /// <summary>Vocabulary or text initialization: the embedding rows of <see cref="InitTokenIds"/>, looked up on the device.</summary>
    public override void InitializeFromBase(TrainableParameters p, DeviceLlama model, AdapterConfig a, int seed)
    {
        if (InitTokenIds(a, model.Config.VocabSize, seed) is not { } ids) return;
        using var idsT = DeviceTensor.Create(model.Context, "prompt.init_ids", DType.I32, [ids.Length], MemoryCategory.Workspace);
        idsT.Upload<int>(ids);
        model.EmbedTokens(idsT, p.ByName[TensorName].Param);
        model.Context.Sync();
    }

    public override AdapterConfig WithTokenizer(AdapterConfig a, ITextTokenizer tokenizer) =>
        Settings(a) is { Init: PromptInit.Text, InitText: { } text } s ? a with { Settings = s with { InitTokenIds = tokenizer.Encode(text, bos: true) } } : a;

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new PromptRuntime(a, p);

    /// <summary>The trainer's rows grow by n per sequence; the memory model counts them through <see cref="ExtraRowsPerSequence"/>.</summary>
    public override int ExtraRowsPerSequence(TrainSetup s) => Settings(ConfigFor(s)).VirtualTokens;

    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Targets = [], Settings = s.Settings as PromptSettings ?? new PromptSettings(DefaultVirtualTokens),
    };

    public static readonly MethodOption VirtualTokensOption =
        new("--virtual-tokens", "Prompt and prefix tuning: virtual tokens (prefix length) n", DefaultVirtualTokens.ToString(System.Globalization.CultureInfo.InvariantCulture),
            (a, v) => a with { Settings = Settings(a) with { VirtualTokens = MethodOption.Int(v) } });

    public static readonly MethodOption InitOption =
        new("--prompt-init", "Prompt tuning: random (N(0,1)), vocab (embeddings of sampled vocabulary ids) or text:\"…\" (the text's token embeddings)", "vocab",
            (a, v) => a with { Settings = ParseInit(Settings(a), v) });

    private static readonly MethodOption[] PromptOptions = [VirtualTokensOption, InitOption];

    private static PromptSettings ParseInit(PromptSettings s, string v)
    {
        if (v.StartsWith("text:", StringComparison.OrdinalIgnoreCase)) return s with { Init = PromptInit.Text, InitText = v[5..].Trim('"') };
        return v.Trim().ToLowerInvariant() switch
        {
            "random" => s with { Init = PromptInit.Random, InitText = null },
            "vocab" => s with { Init = PromptInit.Vocab, InitText = null },
            _ => throw new FormatException($"'{v}' is not random, vocab or text:\"…\""),
        };
    }

    public override IReadOnlyList<MethodOption> Options => PromptOptions;
}
