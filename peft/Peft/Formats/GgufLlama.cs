// Maps a GGUF file of the llama (or qwen2) architecture to LlamaConfig/LlamaWeights and its embedded vocabulary
// to a tokenizer. GGUF llama q/k rows are kept as stored: they are in interleaved-pairs RoPE order.
using System.Text;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;

namespace VkPeft.Peft.Formats;

public static class GgufLlama
{
    private static readonly string[] SupportedArchitectures = ["llama", "qwen2"];

    /// <summary>GGUF tensor name for a kind and layer (layer -1 for global tensors).</summary>
    public static string TensorName(LlamaTensorKind kind, int layer) => kind switch
    {
        LlamaTensorKind.TokenEmbedding => "token_embd.weight",
        LlamaTensorKind.FinalNorm => "output_norm.weight",
        LlamaTensorKind.Classifier => "output.weight",
        LlamaTensorKind.AttnNorm => $"blk.{layer}.attn_norm.weight",
        LlamaTensorKind.FfnNorm => $"blk.{layer}.ffn_norm.weight",
        LlamaTensorKind.Wq => $"blk.{layer}.attn_q.weight",
        LlamaTensorKind.Wk => $"blk.{layer}.attn_k.weight",
        LlamaTensorKind.Wv => $"blk.{layer}.attn_v.weight",
        LlamaTensorKind.Wo => $"blk.{layer}.attn_output.weight",
        LlamaTensorKind.Bq => $"blk.{layer}.attn_q.bias",
        LlamaTensorKind.Bk => $"blk.{layer}.attn_k.bias",
        LlamaTensorKind.Bv => $"blk.{layer}.attn_v.bias",
        LlamaTensorKind.Bo => $"blk.{layer}.attn_output.bias",
        LlamaTensorKind.BGate => $"blk.{layer}.ffn_gate.bias",
        LlamaTensorKind.BUp => $"blk.{layer}.ffn_up.bias",
        LlamaTensorKind.BDown => $"blk.{layer}.ffn_down.bias",
        LlamaTensorKind.WGate => $"blk.{layer}.ffn_gate.weight",
        LlamaTensorKind.WUp => $"blk.{layer}.ffn_up.weight",
        LlamaTensorKind.WDown => $"blk.{layer}.ffn_down.weight",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    private static int ToInt(GgufFile f, string key, uint value) =>
        value <= int.MaxValue ? (int)value : throw new ModelFormatException(f.Path, key, $"value {value} is outside the 32-bit range");

    /// <summary>A special token id: a u32 in llama.cpp's loader.</summary>
    private static int TokenId(GgufFile f, string key, int fallback) => f.TryGetUInt32(key) is { } v ? ToInt(f, key, v) : fallback;

    /// <summary>
    /// Reads the hyper-parameters with the GGUF types llama.cpp's loader requires (u32 counts, f32 eps and RoPE values,
    /// per-layer u32 or arrays for the FFN width and head counts): a file llama.cpp refuses for a type is refused here.
    /// </summary>
    public static LlamaConfig ReadConfig(GgufFile f)
    {
        ArgumentNullException.ThrowIfNull(f);
        string arch = f.GetString("general.architecture");
        if (!SupportedArchitectures.Contains(arch))
            throw new ModelFormatException(f.Path, "general.architecture",
                $"unsupported architecture '{arch}' (supported: {string.Join(", ", SupportedArchitectures)})");
        int I(string key) => ToInt(f, $"{arch}.{key}", f.GetUInt32($"{arch}.{key}"));
        int? OptI(string key) => f.TryGetUInt32($"{arch}.{key}") is { } v ? ToInt(f, $"{arch}.{key}", v) : null;

        int layers = I("block_count");
        // llama.cpp accepts a per-layer array; vkpeft's layers are uniform, so every layer must carry the same value.
        int? PerLayer(string key, bool required)
        {
            string full = $"{arch}.{key}";
            uint[]? values = f.TryGetUInt32PerLayer(full, layers);
            if (values is null)
                return required ? throw new ModelFormatException(f.Path, full, "required metadata key is missing") : null;
            if (values.Distinct().Skip(1).Any())
                throw new ModelFormatException(f.Path, full, $"per-layer values differ ({string.Join(", ", values.Distinct().Take(4))}...); vkpeft supports models whose layers are all alike");
            return ToInt(f, full, values[0]);
        }

        int dim = I("embedding_length");
        int heads = PerLayer("attention.head_count", required: true)!.Value;
        int headDim = OptI("attention.key_length") ?? (heads > 0 ? dim / heads : 0);
        if (OptI("rope.dimension_count") is { } ropeDims && ropeDims != headDim)
            throw new ModelFormatException(f.Path, $"{arch}.rope.dimension_count", $"partial rotary ({ropeDims} of head_dim {headDim}) is not supported");

        int vocab = OptI("vocab_size")
            ?? (f.Has("tokenizer.ggml.tokens") ? f.GetArray<string>("tokenizer.ggml.tokens").Length : 0);
        if (vocab == 0 && f.HasTensor("token_embd.weight")) vocab = (int)f.Tensor("token_embd.weight").Ne[^1];

        RopeScaling? scaling = null;
        string scalingType = f.TryGetString($"{arch}.rope.scaling.type") ?? "none";
        if (scalingType == "linear")
            scaling = new RopeScaling("linear", f.GetFloat32($"{arch}.rope.scaling.factor"));
        else if (scalingType != "none")
            throw new ModelFormatException(f.Path, $"{arch}.rope.scaling.type", $"unsupported RoPE scaling type '{scalingType}' (supported: none, linear)");
        var config = new LlamaConfig
        {
            Architecture = arch,
            Dim = dim,
            HiddenDim = PerLayer("feed_forward_length", required: true)!.Value,
            NLayers = layers,
            NHeads = heads,
            NKvHeads = PerLayer("attention.head_count_kv", required: false) ?? heads,
            HeadDim = headDim,
            VocabSize = vocab,
            MaxSeqLen = I("context_length"),
            RmsNormEps = f.GetFloat32($"{arch}.attention.layer_norm_rms_epsilon"),
            RopeTheta = f.TryGetFloat32($"{arch}.rope.freq_base") ?? 10000.0,
            RopeScaling = scaling,
            RopeLayout = arch == "llama" ? RopeLayout.InterleavedPairs : RopeLayout.RotateHalf,
            TiedClassifier = !f.HasTensor("output.weight"),
            AttentionBias = f.HasTensor("blk.0.attn_q.bias"),
            OutputBias = f.HasTensor("blk.0.attn_output.bias"),
            MlpBias = f.HasTensor("blk.0.ffn_down.bias"),
            BosId = TokenId(f, "tokenizer.ggml.bos_token_id", 1),
            EosId = TokenId(f, "tokenizer.ggml.eos_token_id", 2),
        };
        config.Validate(f.Path);
        return config;
    }

    public static (LlamaConfig Config, LlamaWeights Weights) Load(GgufFile f)
    {
        var config = ReadConfig(f);
        float[] Fetch(string name, int[] shape)
        {
            var t = f.Tensor(name);
            if (!t.Shape.SequenceEqual(shape.Select(d => (long)d)))
                throw new ModelFormatException(f.Path, name,
                    $"shape [{string.Join(", ", t.Shape)}] (ne [{string.Join(", ", t.Ne)}]) disagrees with the metadata, which implies [{string.Join(", ", shape)}]");
            return f.ReadFloat32(name);
        }
        var weights = LlamaWeights.Build(config, (kind, layer, shape) => Fetch(TensorName(kind, layer), shape));
        if (f.HasTensor("rope_freqs.weight"))
            weights = new LlamaWeights
            {
                TokenEmbedding = weights.TokenEmbedding,
                Layers = weights.Layers,
                FinalNorm = weights.FinalNorm,
                Classifier = weights.Classifier,
                RopeFreqFactors = Fetch("rope_freqs.weight", [config.HeadDim / 2]),
            };
        weights.Validate(config, f.Path);
        return (config, weights);
    }

    /// <summary>The embedded tokenizer (tokenizer.ggml.*), or null when the file has none.</summary>
    public static ITextTokenizer? LoadTokenizer(GgufFile f, int modelVocabSize)
    {
        ArgumentNullException.ThrowIfNull(f);
        if (!f.Has("tokenizer.ggml.model")) return null;
        string kind = f.GetString("tokenizer.ggml.model");
        string[] tokens = f.GetArray<string>("tokenizer.ggml.tokens");
        if (tokens.Length != modelVocabSize)
            throw new ModelFormatException(f.Path, "tokenizer.ggml.tokens",
                $"vocabulary has {tokens.Length} tokens but the model's vocab_size is {modelVocabSize}");
        int bos = TokenId(f, "tokenizer.ggml.bos_token_id", 1);
        int eos = TokenId(f, "tokenizer.ggml.eos_token_id", 2);
        int[]? types = f.Has("tokenizer.ggml.token_type") ? f.GetArray<int>("tokenizer.ggml.token_type") : null;
        if (types is not null && types.Length != tokens.Length)
            throw new ModelFormatException(f.Path, "tokenizer.ggml.token_type", $"has {types.Length} entries for {tokens.Length} tokens");
        var control = new List<int>();
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; types is not null && i < types.Length; i++)
        {
            if (types[i] == 3) control.Add(i);
            if (types[i] is 3 or 4) special.TryAdd(tokens[i], i);
        }

        switch (kind)
        {
            case "llama":
                {
                    float[] scores = f.Has("tokenizer.ggml.scores") ? f.GetArray<float>("tokenizer.ggml.scores") : new float[tokens.Length];
                    if (scores.Length != tokens.Length)
                        throw new ModelFormatException(f.Path, "tokenizer.ggml.scores", $"has {scores.Length} entries for {tokens.Length} tokens");
                    var pieces = tokens.Select(t => Encoding.UTF8.GetBytes(t.Replace('\u2581', ' '))).ToList();
                    bool prefix = f.TryGetBool("tokenizer.ggml.add_space_prefix") ?? true;
                    return new ScoreMergeTokenizer(pieces, scores, bos, eos, control, prefix);
                }
            case "gpt2":
                {
                    if (!f.Has("tokenizer.ggml.merges"))
                        throw new ModelFormatException(f.Path, "tokenizer.ggml.merges", "cannot find tokenizer merges (required for gpt2 BPE)");
                    var merges = f.GetArray<string>("tokenizer.ggml.merges").Select(m =>
                    {
                        int sp = m.IndexOf(' ', 1);
                        if (sp < 0) throw new ModelFormatException(f.Path, "tokenizer.ggml.merges", $"merge '{m}' has no separating space");
                        return (m[..sp], m[(sp + 1)..]);
                    }).ToList();
                    var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
                    for (int i = 0; i < tokens.Length; i++) vocab.TryAdd(tokens[i], i);
                    string pattern = f.TryGetString("tokenizer.ggml.pre") switch
                    {
                        "llama-bpe" or "llama3" or "smaug-bpe" => HfTokenizers.Llama3Pattern,
                        "qwen2" => HfTokenizers.Llama3Pattern.Replace(@"\p{N}{1,3}", @"\p{N}", StringComparison.Ordinal),
                        _ => HfTokenizers.Gpt2Pattern,
                    };
                    bool ignoreMerges = f.TryGetString("tokenizer.ggml.pre") is "llama-bpe" or "llama3" or "smaug-bpe";
                    return HfTokenizers.CreateByteLevel(vocab, merges, pattern, special, tokens.Length, bos, eos, ignoreMerges, f.Path,
                        f.TryGetString("tokenizer.chat_template"));
                }
            default:
                throw new ModelFormatException(f.Path, "tokenizer.ggml.model", $"unsupported tokenizer model '{kind}' (supported: llama, gpt2)");
        }
    }
}
