// float64 references for causal grouped-query attention, forward and backward, in the layouts of Kernels.Attention:
// what attention_fwd, attention_bwd_dq and attention_bwd_dkv must compute.
namespace VkPeft.Runtime.Reference;

/// <summary>
/// Sizes of one attention call: <see cref="Batch"/> sequences of <see cref="SeqLen"/> queries at positions
/// StartPos..StartPos+SeqLen−1; k/v hold <see cref="KvStride"/> rows per sequence (keys 0..StartPos+SeqLen−1 are used).
/// </summary>
public readonly record struct AttentionShape(int Batch, int SeqLen, int StartPos, int NHeads, int NKvHeads, int HeadDim, int KvStride)
{
    public int Group => NHeads / NKvHeads;
    public int Ldq => NHeads * HeadDim;
    public int Ldk => NKvHeads * HeadDim;
    public int QCount => Batch * SeqLen * Ldq;
    public int KCount => Batch * KvStride * Ldk;
    public int LseCount => Batch * NHeads * SeqLen;
    public double Scale => 1.0 / Math.Sqrt(HeadDim);
}

public static class AttentionReference
{
    /// <summary>o [B·T, nHeads·hd] and lse [B, nHeads, T] (natural log of Σ exp of the scaled scores).</summary>
    public static (double[] O, double[] Lse) Forward(ReadOnlySpan<double> q, ReadOnlySpan<double> k, ReadOnlySpan<double> v, AttentionShape s)
    {
        Check(q, k, v, s);
        var o = new double[s.QCount];
        var lse = new double[s.LseCount];
        var scores = new double[s.StartPos + s.SeqLen];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < s.SeqLen; i++)
                {
                    int n = s.StartPos + i + 1;   // keys 0..pos
                    double lse_i = Scores(q, k, s, b, h, i, scores);
                    lse[(b * s.NHeads + h) * s.SeqLen + i] = lse_i;
                    int ob = (b * s.SeqLen + i) * s.Ldq + h * s.HeadDim;
                    for (int j = 0; j < n; j++)
                    {
                        double p = Math.Exp(scores[j] - lse_i);
                        int vb = (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;
                        for (int d = 0; d < s.HeadDim; d++) o[ob + d] += p * v[vb + d];
                    }
                }
        return (o, lse);
    }

    /// <summary>
    /// dq, dk, dv for upstream gradient dO (∂loss/∂o), and D = rowsum(dO ⊙ o) [B, nHeads, T]. Keys past
    /// StartPos+SeqLen of each sequence get zero gradients.
    /// </summary>
    public static (double[] Dq, double[] Dk, double[] Dv, double[] Delta) Backward(ReadOnlySpan<double> q, ReadOnlySpan<double> k, ReadOnlySpan<double> v,
        ReadOnlySpan<double> dO, AttentionShape s)
    {
        Check(q, k, v, s);
        if (dO.Length != s.QCount) throw new ArgumentException($"dO has {dO.Length} elements, expected {s.QCount}");
        var (o, lse) = Forward(q, k, v, s);
        var dq = new double[s.QCount];
        var dk = new double[s.KCount];
        var dv = new double[s.KCount];
        var delta = new double[s.LseCount];
        var scores = new double[s.StartPos + s.SeqLen];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < s.SeqLen; i++)
                {
                    int n = s.StartPos + i + 1;
                    Scores(q, k, s, b, h, i, scores);
                    int li = (b * s.NHeads + h) * s.SeqLen + i;
                    int qb = (b * s.SeqLen + i) * s.Ldq + h * s.HeadDim;
                    double dsum = 0;
                    for (int d = 0; d < s.HeadDim; d++) dsum += dO[qb + d] * o[qb + d];
                    delta[li] = dsum;
                    for (int j = 0; j < n; j++)
                    {
                        int kb = (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;
                        double p = Math.Exp(scores[j] - lse[li]);
                        double dp = 0;
                        for (int d = 0; d < s.HeadDim; d++) dp += dO[qb + d] * v[kb + d];
                        double ds = p * (dp - dsum) * s.Scale;   // ∂loss/∂(q·k)
                        for (int d = 0; d < s.HeadDim; d++)
                        {
                            dv[kb + d] += p * dO[qb + d];
                            dq[qb + d] += ds * k[kb + d];
                            dk[kb + d] += ds * q[qb + d];
                        }
                    }
                }
        return (dq, dk, dv, delta);
    }

    /// <summary>Scaled scores of query row i against keys 0..pos into <paramref name="scores"/>; returns their log-sum-exp.</summary>
    private static double Scores(ReadOnlySpan<double> q, ReadOnlySpan<double> k, AttentionShape s, int b, int h, int i, double[] scores)
    {
        int n = s.StartPos + i + 1;
        int qb = (b * s.SeqLen + i) * s.Ldq + h * s.HeadDim;
        double max = double.NegativeInfinity;
        for (int j = 0; j < n; j++)
        {
            int kb = (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;
            double dot = 0;
            for (int d = 0; d < s.HeadDim; d++) dot += q[qb + d] * k[kb + d];
            scores[j] = dot * s.Scale;
            max = Math.Max(max, scores[j]);
        }
        double sum = 0;
        for (int j = 0; j < n; j++) sum += Math.Exp(scores[j] - max);
        return max + Math.Log(sum);
    }

    private static void Check(ReadOnlySpan<double> q, ReadOnlySpan<double> k, ReadOnlySpan<double> v, AttentionShape s)
    {
        if (s.NHeads <= 0 || s.NKvHeads <= 0 || s.NHeads % s.NKvHeads != 0) throw new ArgumentException($"nHeads {s.NHeads} must be a positive multiple of nKvHeads {s.NKvHeads}");
        if (s.KvStride < s.StartPos + s.SeqLen) throw new ArgumentException($"kvStride {s.KvStride} < startPos+seqLen {s.StartPos + s.SeqLen}");
        if (q.Length != s.QCount) throw new ArgumentException($"q has {q.Length} elements, expected {s.QCount}");
        if (k.Length != s.KCount || v.Length != s.KCount) throw new ArgumentException($"k/v have {k.Length}/{v.Length} elements, expected {s.KCount}");
    }
}
