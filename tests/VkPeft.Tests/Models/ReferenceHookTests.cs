// The float64 reference forward's adapter hooks that the device does not run yet: virtual tokens and the attention
// key/value prefix (joined softmax and gated own softmax), each checked against an equivalent run without the hook.
using VkPeft.Peft.Models;
using VkPeft.Tests.Training;

namespace VkPeft.Tests.Models;

public sealed class ReferenceHookTests
{
    private static double MaxDiff(double[] a, double[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    [Fact]
    public void VirtualTokensEqualFeedingTheirTokensFirst()
    {
        var (c, w) = TinyModels.Random(5);
        int[] prefix = [3, 7], sequence = [1, 9, 4];
        var plain = new ReferenceForward(c, w).Forward([.. prefix, .. sequence]);
        var hooked = new ReferenceForward(c, w)
        {
            VirtualTokens = () => [.. prefix.Select(t => w.TokenEmbedding.AsSpan(t * c.Dim, c.Dim).ToArray().Select(v => (double)v).ToArray())],
        };
        var logits = hooked.Forward(sequence);
        for (int t = 0; t < sequence.Length; t++)
            Assert.True(MaxDiff(plain[prefix.Length + t], logits[t]) == 0, $"position {t}: the same operations in the same order give the same bits");
    }

    // A gated prefix of one slot has a softmax of its own over one score, 1: every head adds gate·value to its attention
    // output — the same as adding it to the o-projection's input.
    [Fact]
    public void AGatedOneSlotPrefixAddsTheGatedValueToEachHeadsAttention()
    {
        var (c, w) = TinyModels.Random(6);
        var rng = new Random(2);
        double[][] Rand(int n) => [.. Enumerable.Range(0, c.NLayers).Select(_ => Enumerable.Range(0, n).Select(_ => rng.NextDouble() - 0.5).ToArray())];
        var keys = Rand(c.KvDim);
        var values = Rand(c.KvDim);
        double[] gate = [0.5, -1, 2, 0.25];
        var gated = new ReferenceForward(c, w) { AttentionPrefix = l => ([keys[l]], [values[l]], gate) };
        var added = new ReferenceForward(c, w)
        {
            BeforeLinear = (l, kind, x) =>
            {
                if (kind != LlamaTensorKind.Wo) return x;
                var y = (double[])x.Clone();
                for (int h = 0; h < c.NHeads; h++)
                    for (int i = 0; i < c.HeadDim; i++) y[h * c.HeadDim + i] += gate[h] * values[l][h / c.GroupSize * c.HeadDim + i];
                return y;
            },
        };
        int[] tokens = [2, 8, 5, 11];
        var a = gated.Forward(tokens);
        var b = added.Forward(tokens);
        var plain = new ReferenceForward(c, w).Forward(tokens);
        for (int t = 0; t < tokens.Length; t++)
        {
            // Only the order of two additions differs: float64 rounding, ~1e-16 relative on logits of order 1.
            Assert.True(MaxDiff(a[t], b[t]) < 1e-12, $"position {t}: {MaxDiff(a[t], b[t])}");
            Assert.True(MaxDiff(a[t], plain[t]) > 1e-3, $"position {t}: the prefix changed nothing");
        }
    }

    // Joined softmax: one prefix slot whose key is the token's own (rotated, like the token, to position 1: the prefix
    // takes position 0 of the cache) and whose value is three times the token's own splits attention evenly,
    // (3v + v)/2 = 2v — the same as doubling the o-projection input.
    // One layer: the captured key and value are the layer's own only while its input is unchanged.
    [Fact]
    public void AJoinedPrefixSharesTheSequencesSoftmax()
    {
        var (c, w) = TinyModels.Random(7, layers: 1);
        int[] token = [6];
        var k = new double[c.NLayers][];
        var v = new double[c.NLayers][];
        var capture = new ReferenceForward(c, w)
        {
            AfterLinear = (l, kind, x, y) =>
            {
                if (kind == LlamaTensorKind.Wk) k[l] = (double[])y.Clone();
                if (kind == LlamaTensorKind.Wv) v[l] = (double[])y.Clone();
            },
        };
        capture.Forward(token);
        var invFreq = ReferenceForward.RopeInverseFrequencies(c);
        var rotated = k.Select(kl => VkPeft.Runtime.Reference.LayerReference.Rope(kl, invFreq, 1, c.KvDim, c.HeadDim, c.RopeLayout == RopeLayout.RotateHalf, startPos: 1)).ToArray();
        var joined = new ReferenceForward(c, w) { AttentionPrefix = l => ([rotated[l]], [v[l].Select(x => 3 * x).ToArray()], null) };
        var doubled = new ReferenceForward(c, w) { BeforeLinear = (l, kind, x) => kind == LlamaTensorKind.Wo ? [.. x.Select(e => 2 * e)] : x };
        var a = joined.Forward(token)[0];
        var b = doubled.Forward(token)[0];
        // Equal scores give weights of exactly 1/2; 0.5·3v + 0.5·v and 2v differ by float64 rounding only.
        Assert.True(MaxDiff(a, b) < 1e-12, $"{MaxDiff(a, b)}");
        Assert.True(MaxDiff(a, new ReferenceForward(c, w).Forward(token)[0]) > 1e-3, "the prefix changed nothing");
    }
}
