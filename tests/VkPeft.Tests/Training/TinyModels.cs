// Tiny random Llama models for end-to-end gradient checks and training tests.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

public static class TinyModels
{
    /// <summary>dim 32, hidden 48, 2 layers, 4 heads of 8 (GQA 2 kv heads), vocab 37: shapes off every block size.</summary>
    public static (LlamaConfig Config, LlamaWeights Weights) Random(int seed, int dim = 32, int hidden = 48, int layers = 2, int vocab = 37)
    {
        var c = new LlamaConfig
        {
            Dim = dim, HiddenDim = hidden, NLayers = layers, NHeads = 4, NKvHeads = 2, HeadDim = dim / 4,
            VocabSize = vocab, MaxSeqLen = 64, RmsNormEps = 1e-5, RopeTheta = 10000, RopeLayout = RopeLayout.InterleavedPairs,
            TiedClassifier = true,
        };
        int s = seed;
        float[] R(int n, float std) => TestData.Normal(n, s++, std);
        float[] Ones(int n) { var a = R(n, 0.1f); for (int i = 0; i < n; i++) a[i] += 1; return a; }
        var w = new LlamaWeights
        {
            TokenEmbedding = R(vocab * dim, 0.5f),
            FinalNorm = Ones(dim),
            Layers = [.. Enumerable.Range(0, layers).Select(_ => new LlamaLayerWeights
            {
                AttnNorm = Ones(dim),
                FfnNorm = Ones(dim),
                Wq = R(c.QDim * dim, 0.2f),
                Wk = R(c.KvDim * dim, 0.2f),
                Wv = R(c.KvDim * dim, 0.2f),
                Wo = R(dim * c.QDim, 0.2f),
                WGate = R(hidden * dim, 0.2f),
                WUp = R(hidden * dim, 0.2f),
                WDown = R(dim * hidden, 0.2f),
            })],
        };
        return (c, w);
    }

    /// <summary>The same model with its seven linear kinds replaced (e.g. by what the device holds after quantization).</summary>
    /// <summary>The float64 reference over exactly the base the device holds (its linears dequantized), so only adapter math is compared.</summary>
    public static ReferenceForward DequantizedReference(DeviceLlama model, LlamaConfig c, LlamaWeights w)
    {
        var deq = model.Layers.Select(l => new Dictionary<LlamaTensorKind, float[]>
        {
            [LlamaTensorKind.Wq] = l.Wq.DownloadDequantized(), [LlamaTensorKind.Wk] = l.Wk.DownloadDequantized(),
            [LlamaTensorKind.Wv] = l.Wv.DownloadDequantized(), [LlamaTensorKind.Wo] = l.Wo.DownloadDequantized(),
            [LlamaTensorKind.WGate] = l.Gate.DownloadDequantized(), [LlamaTensorKind.WUp] = l.Up.DownloadDequantized(),
            [LlamaTensorKind.WDown] = l.Down.DownloadDequantized(),
        }).ToArray();
        return new ReferenceForward(c, WithLinears(w, (l, k) => deq[l][k]));
    }

    /// <summary>Short stories in one distinctive pattern (one per line), unlike what stories260K was trained on; written to dir/stories.txt.</summary>
    public static string WritePatternStories(string dir)
    {
        string[] names = ["Pip", "Mo", "Tess", "Bo", "Lulu", "Kit"];
        string[] places = ["the pond", "the red barn", "the big hill", "the garden"];
        var lines = new List<string>();
        foreach (var n in names)
            foreach (var p in places)
                lines.Add($"Pip pip hooray! {n} went to {p}. {n} said pip pip hooray and ran home.");
        var path = Path.Combine(dir, "stories.txt");
        File.WriteAllLines(path, lines);
        return path;
    }

    public static LlamaWeights WithLinears(LlamaWeights w, Func<int, LlamaTensorKind, float[]> linear) => new()
    {
        TokenEmbedding = w.TokenEmbedding,
        FinalNorm = w.FinalNorm,
        Classifier = w.Classifier,
        Layers = [.. w.Layers.Select((l, i) => new LlamaLayerWeights
        {
            AttnNorm = l.AttnNorm,
            FfnNorm = l.FfnNorm,
            Wq = linear(i, LlamaTensorKind.Wq),
            Wk = linear(i, LlamaTensorKind.Wk),
            Wv = linear(i, LlamaTensorKind.Wv),
            Wo = linear(i, LlamaTensorKind.Wo),
            WGate = linear(i, LlamaTensorKind.WGate),
            WUp = linear(i, LlamaTensorKind.WUp),
            WDown = linear(i, LlamaTensorKind.WDown),
        })],
    };

    /// <summary>
    /// Mean negative log-likelihood (float64 reference forward) of <paramref name="targets"/> over sequences of
    /// <paramref name="seqLen"/> tokens laid out back to back in <paramref name="ids"/>; a target of −1 is not predicted.
    /// </summary>
    public static double ReferenceLoss(ReferenceForward reference, int[] ids, int[] targets, int seqLen)
    {
        double total = 0;
        int n = 0;
        for (int s = 0; s < ids.Length / seqLen; s++)
        {
            var session = reference.NewSession();
            for (int i = 0; i < seqLen; i++)
            {
                var logits = session.Step(ids[s * seqLen + i]);
                int t = targets[s * seqLen + i];
                if (t < 0) continue;
                total -= ReferenceForward.LogSoftmaxAt(logits, t);
                n++;
            }
        }
        return total / n;
    }
}
