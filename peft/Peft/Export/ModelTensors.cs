// Row permutations between the two RoPE layouts (interleaved pairs ↔ rotate-half) and helpers that read, replace and
// re-lay-out the seven linear weights of a Llama model; shared by every exporter and adapter saver.
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;

namespace VkPeft.Peft.Export;

/// <summary>
/// The q/k row permutation between RoPE layouts. Within each head of size d (rows h·d … h·d+d−1):
/// <c>rotate-half row c·d/2 + i = interleaved row 2i + c</c> (c ∈ {0, 1}, i &lt; d/2). This is llama.cpp's
/// <c>permute</c>/<c>undo_permute</c> and llama2.c export.py's un-permute. It applies to rows of q/k weights, q/k biases
/// and the rows of LoRA B for q/k; never to columns.
/// </summary>
public static class QkPermutation
{
    /// <summary>Permutes the rows (each <paramref name="rowLength"/> elements) of a [heads·headDim, rowLength] tensor.</summary>
    public static T[] PermuteRows<T>(ReadOnlySpan<T> rows, int heads, int headDim, int rowLength, RopeLayout from, RopeLayout to)
    {
        if (rows.Length != (long)heads * headDim * rowLength)
            throw new ArgumentException($"tensor has {rows.Length} values, expected {heads}·{headDim} rows of {rowLength}", nameof(rows));
        if (headDim % 2 != 0) throw new ArgumentException($"head_dim {headDim} must be even", nameof(headDim));
        var dst = rows.ToArray();
        if (from == to) return dst;
        int half = headDim / 2;
        for (int h = 0; h < heads; h++)
            for (int c = 0; c < 2; c++)
                for (int i = 0; i < half; i++)
                {
                    int rotateHalf = h * headDim + c * half + i, interleaved = h * headDim + 2 * i + c;
                    int src = from == RopeLayout.InterleavedPairs ? interleaved : rotateHalf;
                    int dstRow = from == RopeLayout.InterleavedPairs ? rotateHalf : interleaved;
                    rows.Slice(src * rowLength, rowLength).CopyTo(dst.AsSpan(dstRow * rowLength, rowLength));
                }
        return dst;
    }
}

/// <summary>Access to the seven linear weights of a layer by <see cref="TargetModule"/>.</summary>
public static class ModelTensors
{
    public static readonly TargetModule[] LinearKinds = Enum.GetValues<TargetModule>();


    public static float[] Linear(LlamaLayerWeights l, TargetModule t) => t switch
    {
        TargetModule.Q => l.Wq,
        TargetModule.K => l.Wk,
        TargetModule.V => l.Wv,
        TargetModule.O => l.Wo,
        TargetModule.Gate => l.WGate,
        TargetModule.Up => l.WUp,
        TargetModule.Down => l.WDown,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>A copy of <paramref name="w"/> whose linear weights are replaced by <paramref name="linear"/>(layer, kind, current).</summary>
    public static LlamaWeights WithLinears(LlamaWeights w, Func<int, TargetModule, float[], float[]> linear,
        Func<int, float[]?, float[]?, float[]?, (float[]? Bq, float[]? Bk)>? biases = null)
    {
        var layers = new LlamaLayerWeights[w.Layers.Length];
        for (int i = 0; i < layers.Length; i++)
        {
            var l = w.Layers[i];
            var (bq, bk) = biases is null ? (l.Bq, l.Bk) : biases(i, l.Bq, l.Bk, l.Bv);
            layers[i] = new LlamaLayerWeights
            {
                AttnNorm = l.AttnNorm,
                Wq = linear(i, TargetModule.Q, l.Wq),
                Wk = linear(i, TargetModule.K, l.Wk),
                Wv = linear(i, TargetModule.V, l.Wv),
                Wo = linear(i, TargetModule.O, l.Wo),
                FfnNorm = l.FfnNorm,
                WGate = linear(i, TargetModule.Gate, l.WGate),
                WUp = linear(i, TargetModule.Up, l.WUp),
                WDown = linear(i, TargetModule.Down, l.WDown),
                Bq = bq,
                Bk = bk,
                Bv = l.Bv,
                Bo = l.Bo,
                BGate = l.BGate,
                BUp = l.BUp,
                BDown = l.BDown,
            };
        }
        return new LlamaWeights
        {
            TokenEmbedding = w.TokenEmbedding,
            Layers = layers,
            FinalNorm = w.FinalNorm,
            Classifier = w.Classifier,
            RopeFreqFactors = w.RopeFreqFactors,
        };
    }

    /// <summary>The model with q/k rows (and q/k biases) permuted into <paramref name="layout"/>; same logits.</summary>
    public static (LlamaConfig Config, LlamaWeights Weights) ToLayout(LlamaConfig c, LlamaWeights w, RopeLayout layout)
    {
        if (c.RopeLayout == layout) return (c, w);
        float[] P(float[] rows, int heads, int rowLength) => QkPermutation.PermuteRows<float>(rows, heads, c.HeadDim, rowLength, c.RopeLayout, layout);
        var weights = WithLinears(w,
            (_, t, cur) => t switch
            {
                TargetModule.Q => P(cur, c.NHeads, c.Dim),
                TargetModule.K => P(cur, c.NKvHeads, c.Dim),
                _ => cur,
            },
            (_, bq, bk, _) => (bq is null ? null : P(bq, c.NHeads, 1), bk is null ? null : P(bk, c.NKvHeads, 1)));
        return (c with { RopeLayout = layout }, weights);
    }

    /// <summary>Heads whose rows a q/k tensor holds (null for the other kinds, which are never permuted).</summary>
    public static int? PermutedHeads(LlamaConfig c, TargetModule t) => t switch
    {
        TargetModule.Q => c.NHeads,
        TargetModule.K => c.NKvHeads,
        _ => null,
    };
}
