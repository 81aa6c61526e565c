// Hugging Face folders (config.json + model.safetensors or sharded index; bnb 4-bit and vkpeft INT4 linears are
// dequantized) for Llama, Mistral and Qwen2-style models. HF q/k rows are rotate-half, so RopeLayout is RotateHalf.
using System.Text.Json;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Formats;

public static class HfCheckpoint
{
    public const string ConfigFile = "config.json";
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    private static readonly string[] SupportedModelTypes = ["llama", "mistral", "qwen2"];

    /// <summary>HF tensor name for a kind and layer (layer -1 for global tensors).</summary>
    public static string TensorName(LlamaTensorKind kind, int layer) => kind switch
    {
        LlamaTensorKind.TokenEmbedding => "model.embed_tokens.weight",
        LlamaTensorKind.FinalNorm => "model.norm.weight",
        LlamaTensorKind.Classifier => "lm_head.weight",
        LlamaTensorKind.AttnNorm => $"model.layers.{layer}.input_layernorm.weight",
        LlamaTensorKind.FfnNorm => $"model.layers.{layer}.post_attention_layernorm.weight",
        LlamaTensorKind.Wq => $"model.layers.{layer}.self_attn.q_proj.weight",
        LlamaTensorKind.Wk => $"model.layers.{layer}.self_attn.k_proj.weight",
        LlamaTensorKind.Wv => $"model.layers.{layer}.self_attn.v_proj.weight",
        LlamaTensorKind.Wo => $"model.layers.{layer}.self_attn.o_proj.weight",
        LlamaTensorKind.Bq => $"model.layers.{layer}.self_attn.q_proj.bias",
        LlamaTensorKind.Bk => $"model.layers.{layer}.self_attn.k_proj.bias",
        LlamaTensorKind.Bv => $"model.layers.{layer}.self_attn.v_proj.bias",
        LlamaTensorKind.Bo => $"model.layers.{layer}.self_attn.o_proj.bias",
        LlamaTensorKind.BGate => $"model.layers.{layer}.mlp.gate_proj.bias",
        LlamaTensorKind.BUp => $"model.layers.{layer}.mlp.up_proj.bias",
        LlamaTensorKind.BDown => $"model.layers.{layer}.mlp.down_proj.bias",
        LlamaTensorKind.WGate => $"model.layers.{layer}.mlp.gate_proj.weight",
        LlamaTensorKind.WUp => $"model.layers.{layer}.mlp.up_proj.weight",
        LlamaTensorKind.WDown => $"model.layers.{layer}.mlp.down_proj.weight",
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>Resolves a folder, its config.json or one of its safetensors files to the folder.</summary>
    public static string ResolveDirectory(string path)
    {
        if (Directory.Exists(path)) return Path.GetFullPath(path);
        if (File.Exists(path)) return Path.GetDirectoryName(Path.GetFullPath(path))!;
        throw new FileNotFoundException($"model path not found: {path}", path);
    }

    /// <summary>Parses config.json into a validated <see cref="LlamaConfig"/> (RotateHalf RoPE).</summary>
    public static LlamaConfig ReadConfig(string configPath)
    {
        if (!File.Exists(configPath)) throw new FileNotFoundException($"config.json not found: {configPath}", configPath);
        using var doc = JsonFields.ParseFile(configPath);
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) throw new ModelFormatException(configPath, "config", "config.json must be a JSON object");
        string modelType = Str(r, "model_type") ?? "";
        string? archName = r.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0
            && archs[0].ValueKind == JsonValueKind.String ? archs[0].GetString() : null;
        if (!SupportedModelTypes.Contains(modelType))
        {
            string shown = modelType.Length > 0 ? modelType : archName ?? "(none)";
            throw new ModelFormatException(configPath, "model_type",
                $"unsupported architecture '{shown}' (supported: {string.Join(", ", SupportedModelTypes)})");
        }
        string act = Str(r, "hidden_act") ?? "silu";
        if (act != "silu") throw new ModelFormatException(configPath, "hidden_act", $"unsupported activation '{act}' (only silu/SwiGLU)");
        if (Bool(r, "mlp_bias") == true && modelType != "llama") throw new ModelFormatException(configPath, "mlp_bias", $"MLP biases are supported on llama models only, not {modelType}");

        int dim = Int(configPath, r, "hidden_size") ?? throw Missing(configPath, "hidden_size");
        int heads = Int(configPath, r, "num_attention_heads") ?? throw Missing(configPath, "num_attention_heads");
        int headDim = Int(configPath, r, "head_dim") ?? (heads > 0 ? dim / heads : 0);
        bool qwen = modelType == "qwen2";

        double theta = Dbl(r, "rope_theta") ?? 10000.0;
        RopeScaling? scaling = null;
        JsonElement ropeObj = default;
        string ropeField = "rope_scaling";
        if (r.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object)
        {
            ropeObj = rp;
            ropeField = "rope_parameters";
            theta = Dbl(rp, "rope_theta") ?? theta;
        }
        else if (r.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object) ropeObj = rs;
        if (ropeObj.ValueKind == JsonValueKind.Object)
        {
            string type = Str(ropeObj, "rope_type") ?? Str(ropeObj, "type") ?? "default";
            if (type != "default")
            {
                if (!RopeScaling.SupportedTypes.Contains(type))
                    throw new ModelFormatException(configPath, ropeField + ".rope_type",
                        $"unsupported RoPE scaling type '{type}' (supported: default, {string.Join(", ", RopeScaling.SupportedTypes)})");
                scaling = new RopeScaling(
                    type,
                    Dbl(ropeObj, "factor") ?? throw Missing(configPath, ropeField + ".factor"),
                    Dbl(ropeObj, "low_freq_factor") ?? 1.0,
                    Dbl(ropeObj, "high_freq_factor") ?? 4.0,
                    Int(configPath, ropeObj, "original_max_position_embeddings") ?? 8192);
            }
        }

        int? window = null;
        if (r.TryGetProperty("sliding_window", out var sw) && sw.ValueKind == JsonValueKind.Number
            && (!qwen || Bool(r, "use_sliding_window") == true))
            window = JsonFields.RequireInt(configPath, "sliding_window", sw);

        var config = new LlamaConfig
        {
            Architecture = modelType,
            Dim = dim,
            HiddenDim = Int(configPath, r, "intermediate_size") ?? throw Missing(configPath, "intermediate_size"),
            NLayers = Int(configPath, r, "num_hidden_layers") ?? throw Missing(configPath, "num_hidden_layers"),
            NHeads = heads,
            NKvHeads = Int(configPath, r, "num_key_value_heads") ?? heads,
            HeadDim = headDim,
            VocabSize = Int(configPath, r, "vocab_size") ?? throw Missing(configPath, "vocab_size"),
            MaxSeqLen = Int(configPath, r, "max_position_embeddings") ?? 2048,
            RmsNormEps = Dbl(r, "rms_norm_eps") ?? 1e-6,
            RopeTheta = theta,
            RopeScaling = scaling,
            RopeLayout = RopeLayout.RotateHalf,
            TiedClassifier = Bool(r, "tie_word_embeddings") ?? false,
            AttentionBias = Bool(r, "attention_bias") ?? qwen,
            OutputBias = modelType == "llama" && Bool(r, "attention_bias") == true,   // Qwen2 biases q/k/v only
            MlpBias = Bool(r, "mlp_bias") == true,
            SlidingWindow = window,
            BosId = TokenId(configPath, r, "bos_token_id") ?? 1,
            EosId = TokenId(configPath, r, "eos_token_id") ?? 2,
        };
        config.Validate(configPath);
        return config;
    }

    /// <summary>Loads config.json and the safetensors weights of an HF folder.</summary>
    public static (LlamaConfig Config, LlamaWeights Weights) Load(string path)
    {
        string dir = ResolveDirectory(path);
        var config = ReadConfig(Path.Combine(dir, ConfigFile));
        int? int4Group = QuantizedSafeTensors.Int4GroupSize(Path.Combine(dir, ConfigFile));
        using var set = OpenWeights(dir);
        var weights = LlamaWeights.Build(config, (kind, layer, shape) =>
        {
            string name = TensorName(kind, layer);
            // Quantized linear weights: bitsandbytes 4-bit (quant_state key) or vkpeft INT4 groups, dequantized to float32.
            if (shape.Length == 2 && QuantizedSafeTensors.Bnb4BitStateKey(set, name) is not null)
                return QuantizedSafeTensors.ReadBnb4Bit(set, name, shape);
            if (shape.Length == 2 && int4Group is { } g && QuantizedSafeTensors.IsInt4(set, name))
            {
                var q = QuantizedSafeTensors.ReadInt4(set, name, shape, g);
                var dense = new float[q.Count];
                VkPeft.Quant.Int4GroupCodec.Dequantize(q, dense);
                return dense;
            }
            var info = set.Info(name);
            string file = set.FileOf(name).Path;
            if (!info.Shape.Select(d => d).SequenceEqual(shape.Select(d => (long)d)))
                throw new ModelFormatException(file, name,
                    $"shape [{string.Join(", ", info.Shape)}] disagrees with config.json, which implies [{string.Join(", ", shape)}]");
            return set.ReadFloat32(name);
        });
        weights.Validate(config, dir);
        return (config, weights);
    }

    /// <summary>Opens model.safetensors.index.json (sharded) or model.safetensors, or the only *.safetensors file.</summary>
    public static SafeTensorsSet OpenWeights(string dir)
    {
        string index = Path.Combine(dir, IndexFile);
        if (File.Exists(index)) return SafeTensorsSet.Open(index);
        string single = Path.Combine(dir, SingleFile);
        if (File.Exists(single)) return SafeTensorsSet.Open(single);
        var any = Directory.GetFiles(dir, "*.safetensors");
        if (any.Length == 1) return SafeTensorsSet.Open(any[0]);
        string hint = File.Exists(Path.Combine(dir, "pytorch_model.bin")) ? " (pytorch_model.bin pickles are not supported; convert to safetensors)" : "";
        throw new ModelFormatException(dir, SingleFile, $"no {SingleFile} or {IndexFile} in the folder{hint}");
    }

    private static ModelFormatException Missing(string file, string field) => new(file, field, "required field is missing");

    // eos_token_id may be an int or a list of ints (Llama 3.1); the first one is used.
    private static int? TokenId(string file, JsonElement e, string name)
    {
        if (e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array)
            return v.GetArrayLength() > 0 ? JsonFields.RequireInt(file, name + "[0]", v[0]) : null;
        return Int(file, e, name);
    }
}
