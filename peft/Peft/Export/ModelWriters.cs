// Model writers behind the Exporter: what every format shares (tensor order, INT4 row permutation). Each on-disk
// format has its own file: ModelWriters.Hf.cs, ModelWriters.Gguf.cs (models and LoRA adapters), ModelWriters.Llama2c.cs.
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Quant;

namespace VkPeft.Peft.Export;

internal static partial class ModelWriters
{
    private static readonly LlamaTensorKind[] LayerOrder =
    [
        LlamaTensorKind.AttnNorm, LlamaTensorKind.Wq, LlamaTensorKind.Wk, LlamaTensorKind.Wv, LlamaTensorKind.Bq,
        LlamaTensorKind.Bk, LlamaTensorKind.Bv, LlamaTensorKind.Wo, LlamaTensorKind.Bo, LlamaTensorKind.FfnNorm, LlamaTensorKind.WGate,
        LlamaTensorKind.BGate, LlamaTensorKind.WUp, LlamaTensorKind.BUp, LlamaTensorKind.WDown, LlamaTensorKind.BDown,
    ];

    private static float[]? Pick(LlamaWeights w, LlamaTensorKind k, int layer) => k switch
    {
        LlamaTensorKind.TokenEmbedding => w.TokenEmbedding,
        LlamaTensorKind.FinalNorm => w.FinalNorm,
        LlamaTensorKind.Classifier => w.Classifier,
        LlamaTensorKind.AttnNorm => w.Layers[layer].AttnNorm,
        LlamaTensorKind.FfnNorm => w.Layers[layer].FfnNorm,
        LlamaTensorKind.Bq => w.Layers[layer].Bq,
        LlamaTensorKind.Bk => w.Layers[layer].Bk,
        LlamaTensorKind.Bv => w.Layers[layer].Bv,
        LlamaTensorKind.Bo => w.Layers[layer].Bo,
        LlamaTensorKind.BGate => w.Layers[layer].BGate,
        LlamaTensorKind.BUp => w.Layers[layer].BUp,
        LlamaTensorKind.BDown => w.Layers[layer].BDown,
        _ => ModelTensors.Linear(w.Layers[layer], k.ToTarget()!.Value),
    };

    /// <summary>(kind, layer) of every tensor the model holds, in file order.</summary>
    private static IEnumerable<(LlamaTensorKind Kind, int Layer)> Tensors(LlamaConfig c, LlamaWeights w)
    {
        yield return (LlamaTensorKind.TokenEmbedding, -1);
        for (int l = 0; l < c.NLayers; l++)
            foreach (var k in LayerOrder)
                if (Pick(w, k, l) is not null) yield return (k, l);
        yield return (LlamaTensorKind.FinalNorm, -1);
        if (w.Classifier is not null) yield return (LlamaTensorKind.Classifier, -1);
    }

    private static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }

    /// <summary>INT4 rows (codes, scales, mins) permuted between RoPE layouts.</summary>
    internal static Int4GroupQuantized PermuteInt4(Int4GroupQuantized q, int heads, int headDim, RopeLayout from, RopeLayout to)
    {
        if (from == to) return q;
        var codes = new byte[q.Count];
        for (long e = 0; e < codes.LongLength; e++) codes[e] = (byte)Nibbles.Get(q.Packed, e);
        codes = QkPermutation.PermuteRows<byte>(codes, heads, headDim, q.InFeatures, from, to);
        var packed = new byte[q.Packed.Length];
        for (long e = 0; e < codes.LongLength; e++) Nibbles.Set(packed, e, codes[e]);
        return q with
        {
            Packed = packed,
            Scales = QkPermutation.PermuteRows<float>(q.Scales, heads, headDim, q.GroupsPerRow, from, to),
            Mins = QkPermutation.PermuteRows<float>(q.Mins, heads, headDim, q.GroupsPerRow, from, to),
        };
    }

    /// <summary>The merged model's INT4 weights in <paramref name="layout"/>.</summary>
    private static Dictionary<(int, TargetModule), Int4GroupQuantized>? Int4InLayout(MergedModel m, RopeLayout layout)
    {
        if (m.Int4 is null) return null;
        var c = m.Config;
        return m.Int4.ToDictionary(kv => kv.Key, kv => ModelTensors.PermutedHeads(c, kv.Key.Kind) is { } heads
            ? PermuteInt4(kv.Value, heads, c.HeadDim, c.RopeLayout, layout)
            : kv.Value);
    }
}
