// Checks the float64 attention reference itself: its backward against central finite differences of its forward, and
// its forward against a direct per-row softmax with masking, batching and the KV-cache layout.
using VkPeft.Runtime.Reference;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Attention;

public sealed class AttentionReferenceTests
{
    public static TheoryData<int, int, int, int, int, int> GradientCases() => new()
    {
        // batch, seqLen, startPos, headDim, kvStride extra rows, seed
        { 1, 5, 0, 4, 0, 1 },
        { 1, 9, 0, 8, 0, 2 },
        { 2, 7, 0, 6, 0, 3 },
        { 2, 6, 3, 5, 2, 4 },
    };

    /// <summary>
    /// loss = Σ o ⊙ W; the reference backward with dO = W must match central differences (step 1e-5 in float64: truncation
    /// ~h²·f''' ≈ 1e-10 and cancellation ~1e-16/h ≈ 1e-11, far below the 1e-6 relative error asserted).
    /// GQA 4:2 (two query heads per kv head).
    /// </summary>
    [Theory]
    [MemberData(nameof(GradientCases))]
    public void BackwardMatchesFiniteDifferences(int batch, int seqLen, int startPos, int headDim, int extra, int seed)
    {
        var s = new AttentionShape(batch, seqLen, startPos, 4, 2, headDim, startPos + seqLen + extra);
        double[] q = ToDouble(TestData.Normal(s.QCount, seed, 1.5f));
        double[] k = ToDouble(TestData.Normal(s.KCount, seed + 100, 1.5f));
        double[] v = ToDouble(TestData.Normal(s.KCount, seed + 200));
        double[] w = ToDouble(TestData.Normal(s.QCount, seed + 300));
        var (dq, dk, dv, delta) = AttentionReference.Backward(q, k, v, w, s);

        double Loss()
        {
            var (o, _) = AttentionReference.Forward(q, k, v, s);
            double sum = 0;
            for (int i = 0; i < o.Length; i++) sum += o[i] * w[i];
            return sum;
        }
        AssertGradient(q, dq, Loss, "dq");
        AssertGradient(k, dk, Loss, "dk");
        AssertGradient(v, dv, Loss, "dv");

        // Keys past startPos+seqLen are never seen: exactly zero gradient.
        for (int b = 0; b < batch; b++)
            for (int j = startPos + seqLen; j < s.KvStride; j++)
                for (int c = 0; c < s.Ldk; c++)
                    Assert.True(dk[(b * s.KvStride + j) * s.Ldk + c] == 0 && dv[(b * s.KvStride + j) * s.Ldk + c] == 0, $"unseen key {j} has a gradient");
        Assert.Equal(s.LseCount, delta.Length);
    }

    private static void AssertGradient(double[] x, double[] analytic, Func<double> loss, string what)
    {
        const double h = 1e-5;
        double scale = analytic.Max(Math.Abs);
        Assert.True(scale > 1e-3, $"{what}: gradient is (near) zero everywhere; the check would be vacuous");
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double x0 = x[i];
            x[i] = x0 + h; double up = loss();
            x[i] = x0 - h; double down = loss();
            x[i] = x0;
            double fd = (up - down) / (2 * h);
            worst = Math.Max(worst, Math.Abs(fd - analytic[i]) / scale);
        }
        Assert.True(worst < 1e-6, $"{what}: finite differences differ by {worst:G3} relative to max |gradient| {scale:G3}");
    }

    [Fact]
    public void ForwardIsCausalPerSequenceSoftmax()
    {
        // Two sequences of 3 queries after 2 cached positions, one head, hd 2, kv rows per sequence 6 (one unused).
        var s = new AttentionShape(2, 3, 2, 1, 1, 2, 6);
        double[] q = ToDouble(TestData.Normal(s.QCount, 7));
        double[] k = ToDouble(TestData.Normal(s.KCount, 8));
        double[] v = ToDouble(TestData.Normal(s.KCount, 9));
        var (o, lse) = AttentionReference.Forward(q, k, v, s);
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 3; i++)
            {
                int pos = 2 + i, qi = (b * 3 + i) * 2;
                var sc = new double[pos + 1];
                for (int j = 0; j <= pos; j++) sc[j] = (q[qi] * k[(b * 6 + j) * 2] + q[qi + 1] * k[(b * 6 + j) * 2 + 1]) / Math.Sqrt(2);
                double z = sc.Sum(Math.Exp);
                double o0 = 0, o1 = 0;
                for (int j = 0; j <= pos; j++) { o0 += Math.Exp(sc[j]) / z * v[(b * 6 + j) * 2]; o1 += Math.Exp(sc[j]) / z * v[(b * 6 + j) * 2 + 1]; }
                Assert.Equal(o0, o[qi], 12);
                Assert.Equal(o1, o[qi + 1], 12);
                Assert.Equal(Math.Log(z), lse[b * 3 + i], 12);
            }
    }

    internal static double[] ToDouble(float[] x) => Array.ConvertAll(x, f => (double)f);
}
