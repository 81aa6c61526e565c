// Host-side float32 weights of a Llama-family decoder, matrices in PyTorch [out, in] row-major order.
// Loaders build them through LlamaWeights.Build, which asks for each tensor with the shape the config implies.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;

namespace VkPeft.Peft.Models;

/// <summary>The kinds of tensor a Llama decoder holds.</summary>
public enum LlamaTensorKind
{
    TokenEmbedding,
    AttnNorm,
    Wq,
    Wk,
    Wv,
    Wo,
    FfnNorm,
    WGate,
    WUp,
    WDown,
    Bq,
    Bk,
    Bv,
    Bo,
    BGate,
    BUp,
    BDown,
    FinalNorm,
    Classifier,
}

/// <summary>
/// The seven linear weights are <see cref="TargetModule"/> values; among the tensor kinds they are Wq … WDown. These
/// two maps are the only translation between the two.
/// </summary>
public static class LinearKinds
{
    /// <summary>The tensor kind of a linear weight.</summary>
    public static LlamaTensorKind ToKind(this TargetModule t) => t switch
    {
        TargetModule.Q => LlamaTensorKind.Wq,
        TargetModule.K => LlamaTensorKind.Wk,
        TargetModule.V => LlamaTensorKind.Wv,
        TargetModule.O => LlamaTensorKind.Wo,
        TargetModule.Gate => LlamaTensorKind.WGate,
        TargetModule.Up => LlamaTensorKind.WUp,
        TargetModule.Down => LlamaTensorKind.WDown,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "not a linear weight"),
    };

    /// <summary>The linear weight a tensor kind is, or null for embeddings, norms and biases.</summary>
    public static TargetModule? ToTarget(this LlamaTensorKind k) => k switch
    {
        LlamaTensorKind.Wq => TargetModule.Q,
        LlamaTensorKind.Wk => TargetModule.K,
        LlamaTensorKind.Wv => TargetModule.V,
        LlamaTensorKind.Wo => TargetModule.O,
        LlamaTensorKind.WGate => TargetModule.Gate,
        LlamaTensorKind.WUp => TargetModule.Up,
        LlamaTensorKind.WDown => TargetModule.Down,
        _ => null,
    };
}

public sealed class LlamaLayerWeights
{
    public required float[] AttnNorm { get; init; }   // [dim]
    public required float[] Wq { get; init; }         // [n_heads*head_dim, dim]
    public required float[] Wk { get; init; }         // [n_kv_heads*head_dim, dim]
    public required float[] Wv { get; init; }         // [n_kv_heads*head_dim, dim]
    public required float[] Wo { get; init; }         // [dim, n_heads*head_dim]
    public required float[] FfnNorm { get; init; }    // [dim]
    public required float[] WGate { get; init; }      // [hidden_dim, dim]  (llama2.c w1)
    public required float[] WUp { get; init; }        // [hidden_dim, dim]  (llama2.c w3)
    public required float[] WDown { get; init; }      // [dim, hidden_dim]  (llama2.c w2)
    public float[]? Bq { get; init; }                 // [n_heads*head_dim], only with attention_bias
    public float[]? Bk { get; init; }                 // [n_kv_heads*head_dim]
    public float[]? Bv { get; init; }                 // [n_kv_heads*head_dim]
    public float[]? Bo { get; init; }                 // [dim], only with an o_proj bias
    public float[]? BGate { get; init; }              // [hidden_dim], only with mlp_bias
    public float[]? BUp { get; init; }                // [hidden_dim]
    public float[]? BDown { get; init; }              // [dim]
}

public sealed class LlamaWeights
{
    public required float[] TokenEmbedding { get; init; }        // [vocab, dim]
    public required LlamaLayerWeights[] Layers { get; init; }    // [n_layers]
    public required float[] FinalNorm { get; init; }             // [dim]

    /// <summary>Untied classifier; null when the classifier is the token embedding.</summary>
    public float[]? Classifier { get; init; }                    // [vocab, dim]

    /// <summary>Optional per-frequency RoPE divisors (GGUF rope_freqs.weight, llama3 scaling baked in).</summary>
    public float[]? RopeFreqFactors { get; init; }               // [head_dim/2]

    /// <summary>The matrix the final hidden state is multiplied by.</summary>
    public float[] ClassifierOrEmbedding => Classifier ?? TokenEmbedding;

    /// <summary>The shape, [out, in] or [n], that <paramref name="config"/> implies for a tensor kind.</summary>
    public static int[] ShapeOf(LlamaConfig config, LlamaTensorKind kind) => kind switch
    {
        LlamaTensorKind.TokenEmbedding or LlamaTensorKind.Classifier => [config.VocabSize, config.Dim],
        LlamaTensorKind.AttnNorm or LlamaTensorKind.FfnNorm or LlamaTensorKind.FinalNorm => [config.Dim],
        _ when kind.ToTarget() is { } t => [config.LinearShape(t).Out, config.LinearShape(t).In],
        LlamaTensorKind.Bq => [config.QDim],
        LlamaTensorKind.Bk or LlamaTensorKind.Bv => [config.KvDim],
        LlamaTensorKind.Bo or LlamaTensorKind.BDown => [config.Dim],
        LlamaTensorKind.BGate or LlamaTensorKind.BUp => [config.HiddenDim],
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>
    /// Assembles weights by asking <paramref name="fetch"/> for every tensor the config needs
    /// (layer is -1 for global tensors). The fetcher checks shapes and throws named errors.
    /// </summary>
    public static LlamaWeights Build(LlamaConfig config, Func<LlamaTensorKind, int, int[], float[]> fetch)
    {
        float[] Get(LlamaTensorKind k, int layer) => fetch(k, layer, ShapeOf(config, k));
        var layers = new LlamaLayerWeights[config.NLayers];
        for (int l = 0; l < config.NLayers; l++)
        {
            layers[l] = new LlamaLayerWeights
            {
                AttnNorm = Get(LlamaTensorKind.AttnNorm, l),
                Wq = Get(LlamaTensorKind.Wq, l),
                Wk = Get(LlamaTensorKind.Wk, l),
                Wv = Get(LlamaTensorKind.Wv, l),
                Wo = Get(LlamaTensorKind.Wo, l),
                FfnNorm = Get(LlamaTensorKind.FfnNorm, l),
                WGate = Get(LlamaTensorKind.WGate, l),
                WUp = Get(LlamaTensorKind.WUp, l),
                WDown = Get(LlamaTensorKind.WDown, l),
                Bq = config.AttentionBias ? Get(LlamaTensorKind.Bq, l) : null,
                Bk = config.AttentionBias ? Get(LlamaTensorKind.Bk, l) : null,
                Bv = config.AttentionBias ? Get(LlamaTensorKind.Bv, l) : null,
                Bo = config.OutputBias ? Get(LlamaTensorKind.Bo, l) : null,
                BGate = config.MlpBias ? Get(LlamaTensorKind.BGate, l) : null,
                BUp = config.MlpBias ? Get(LlamaTensorKind.BUp, l) : null,
                BDown = config.MlpBias ? Get(LlamaTensorKind.BDown, l) : null,
            };
        }
        return new LlamaWeights
        {
            TokenEmbedding = Get(LlamaTensorKind.TokenEmbedding, -1),
            Layers = layers,
            FinalNorm = Get(LlamaTensorKind.FinalNorm, -1),
            Classifier = config.TiedClassifier ? null : Get(LlamaTensorKind.Classifier, -1),
        };
    }

    /// <summary>Checks every array length against the config; throws naming <paramref name="source"/> and the tensor.</summary>
    public void Validate(LlamaConfig config, string source)
    {
        void Check(float[]? data, LlamaTensorKind kind, int layer)
        {
            string name = layer < 0 ? kind.ToString() : $"layers.{layer}.{kind}";
            int[] shape = ShapeOf(config, kind);
            long expected = 1;
            foreach (int d in shape) expected *= d;
            if (data is null)
                throw new ModelFormatException(source, name, "missing tensor");
            if (data.LongLength != expected)
                throw new ModelFormatException(source, name,
                    $"has {data.LongLength} values but the config implies shape [{string.Join(", ", shape)}] = {expected}");
        }

        Check(TokenEmbedding, LlamaTensorKind.TokenEmbedding, -1);
        Check(FinalNorm, LlamaTensorKind.FinalNorm, -1);
        if (Layers.Length != config.NLayers)
            throw new ModelFormatException(source, "layers", $"has {Layers.Length} layers but n_layers is {config.NLayers}");
        if (!config.TiedClassifier) Check(Classifier, LlamaTensorKind.Classifier, -1);
        if (RopeFreqFactors is { } f && f.Length != config.HeadDim / 2)
            throw new ModelFormatException(source, "rope_freqs", $"has {f.Length} values, expected head_dim/2 = {config.HeadDim / 2}");
        for (int l = 0; l < Layers.Length; l++)
        {
            var w = Layers[l];
            Check(w.AttnNorm, LlamaTensorKind.AttnNorm, l);
            Check(w.Wq, LlamaTensorKind.Wq, l);
            Check(w.Wk, LlamaTensorKind.Wk, l);
            Check(w.Wv, LlamaTensorKind.Wv, l);
            Check(w.Wo, LlamaTensorKind.Wo, l);
            Check(w.FfnNorm, LlamaTensorKind.FfnNorm, l);
            Check(w.WGate, LlamaTensorKind.WGate, l);
            Check(w.WUp, LlamaTensorKind.WUp, l);
            Check(w.WDown, LlamaTensorKind.WDown, l);
            if (config.AttentionBias)
            {
                Check(w.Bq, LlamaTensorKind.Bq, l);
                Check(w.Bk, LlamaTensorKind.Bk, l);
                Check(w.Bv, LlamaTensorKind.Bv, l);
            }
            if (config.OutputBias) Check(w.Bo, LlamaTensorKind.Bo, l);
            if (config.MlpBias)
            {
                Check(w.BGate, LlamaTensorKind.BGate, l);
                Check(w.BUp, LlamaTensorKind.BUp, l);
                Check(w.BDown, LlamaTensorKind.BDown, l);
            }
        }
    }
}
