// Hyper-parameters of a Llama-family decoder (Llama 1/2/3, Mistral, Qwen2-style biases).
// Loaders fill it from llama2.c headers, HF config.json or GGUF metadata and then call Validate.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;

namespace VkPeft.Peft.Models;

/// <summary>Which elements of a head RoPE rotates together.</summary>
public enum RopeLayout
{
    /// <summary>Adjacent pairs (2i, 2i+1): Meta's original weights, llama2.c, GGUF llama.</summary>
    InterleavedPairs,

    /// <summary>Halves (i, i + d/2): Hugging Face rotate_half (NEOX style).</summary>
    RotateHalf,
}

/// <summary>RoPE frequency scaling. Type is "linear" or "llama3".</summary>
public sealed record RopeScaling(
    string Type,
    double Factor,
    double LowFreqFactor = 1.0,
    double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    public static readonly IReadOnlyList<string> SupportedTypes = ["linear", "llama3"];
}

public sealed record LlamaConfig
{
    /// <summary>Family name as the source file spells it ("llama", "mistral", "qwen2").</summary>
    public string Architecture { get; init; } = "llama";

    public int Dim { get; init; }              // model width (hidden_size)
    public int HiddenDim { get; init; }        // MLP width (intermediate_size)
    public int NLayers { get; init; }
    public int NHeads { get; init; }
    public int NKvHeads { get; init; }
    public int HeadDim { get; init; }          // usually Dim / NHeads
    public int VocabSize { get; init; }
    public int MaxSeqLen { get; init; }        // max_position_embeddings / context length
    public double RmsNormEps { get; init; } = 1e-5;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling? RopeScaling { get; init; }
    public RopeLayout RopeLayout { get; init; } = RopeLayout.InterleavedPairs;

    /// <summary>True when the classifier (lm_head) shares the token embedding matrix.</summary>
    public bool TiedClassifier { get; init; }

    /// <summary>True when q/k/v projections carry biases (Qwen2).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>True when o_proj carries a bias (Hugging Face Llama's attention_bias covers q, k, v and o).</summary>
    public bool OutputBias { get; init; }

    /// <summary>True when gate/up/down projections carry biases (Hugging Face Llama's mlp_bias).</summary>
    public bool MlpBias { get; init; }

    /// <summary>Mistral-style sliding attention window; null attends to every earlier position.</summary>
    public int? SlidingWindow { get; init; }

    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;

    /// <summary>Rows of wq: NHeads * HeadDim.</summary>
    public int QDim => NHeads * HeadDim;

    /// <summary>Rows of wk and wv: NKvHeads * HeadDim.</summary>
    public int KvDim => NKvHeads * HeadDim;

    /// <summary>Whether the base linear <paramref name="t"/> carries a bias of its own.</summary>
    public bool HasBias(TargetModule t) => t switch
    {
        TargetModule.Q or TargetModule.K or TargetModule.V => AttentionBias,
        TargetModule.O => OutputBias,
        _ => MlpBias,
    };

    /// <summary>[out, in] of one of the seven linear weights of a layer: the one place these shapes are defined.</summary>
    public (int Out, int In) LinearShape(TargetModule t) => t switch
    {
        TargetModule.Q => (QDim, Dim),
        TargetModule.K or TargetModule.V => (KvDim, Dim),
        TargetModule.O => (Dim, QDim),
        TargetModule.Gate or TargetModule.Up => (HiddenDim, Dim),
        TargetModule.Down => (Dim, HiddenDim),
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "not a linear weight"),
    };

    /// <summary>Query heads sharing one key/value head.</summary>
    public int GroupSize => NHeads / NKvHeads;

    /// <summary>Throws <see cref="ModelFormatException"/> naming <paramref name="source"/> and the bad field.</summary>
    public void Validate(string source)
    {
        Positive(source, "dim", Dim);
        Positive(source, "hidden_dim", HiddenDim);
        Positive(source, "n_layers", NLayers);
        Positive(source, "n_heads", NHeads);
        Positive(source, "n_kv_heads", NKvHeads);
        Positive(source, "head_dim", HeadDim);
        Positive(source, "vocab_size", VocabSize);
        Positive(source, "seq_len", MaxSeqLen);
        if (NHeads % NKvHeads != 0)
            throw new ModelFormatException(source, "n_kv_heads", $"n_heads {NHeads} is not a multiple of n_kv_heads {NKvHeads}");
        if (HeadDim % 2 != 0)
            throw new ModelFormatException(source, "head_dim", $"head_dim {HeadDim} must be even for RoPE");
        if (!(RmsNormEps > 0) || double.IsInfinity(RmsNormEps))
            throw new ModelFormatException(source, "rms_norm_eps", $"must be a positive number, got {RmsNormEps}");
        if (!(RopeTheta > 0) || double.IsInfinity(RopeTheta))
            throw new ModelFormatException(source, "rope_theta", $"must be a positive number, got {RopeTheta}");
        if (SlidingWindow is { } w && w <= 0)
            throw new ModelFormatException(source, "sliding_window", $"must be positive, got {w}");
        if (RopeScaling is { } s)
        {
            if (!RopeScaling.SupportedTypes.Contains(s.Type))
                throw new ModelFormatException(source, "rope_scaling.rope_type",
                    $"unsupported RoPE scaling type '{s.Type}' (supported: {string.Join(", ", RopeScaling.SupportedTypes)})");
            if (!(s.Factor > 0))
                throw new ModelFormatException(source, "rope_scaling.factor", $"must be positive, got {s.Factor}");
            if (s.Type == "llama3")
            {
                if (!(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor))
                    throw new ModelFormatException(source, "rope_scaling.high_freq_factor",
                        $"llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got {s.LowFreqFactor} and {s.HighFreqFactor}");
                Positive(source, "rope_scaling.original_max_position_embeddings", s.OriginalMaxPositionEmbeddings);
            }
        }
        if (BosId >= VocabSize)
            throw new ModelFormatException(source, "bos_token_id", $"{BosId} is outside the vocabulary of {VocabSize}");
        if (EosId >= VocabSize)
            throw new ModelFormatException(source, "eos_token_id", $"{EosId} is outside the vocabulary of {VocabSize}");
    }

    private static void Positive(string source, string field, int value)
    {
        if (value <= 0) throw new ModelFormatException(source, field, $"must be positive, got {value}");
    }
}
