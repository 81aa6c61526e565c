// float64 reference for LLaMA-Adapter's gated prompt attention, forward and backward, in the layouts of
// Kernels.AdaptionPrompt: what adaption_prompt_fwd and adaption_prompt_bwd must compute.
namespace VkPeft.Runtime.Reference;

/// <summary>
/// Sizes of one gated prompt attention call: <see cref="Rows"/> query rows (any batch and positions: the prompt is never
/// masked), <see cref="NHeads"/> query heads over <see cref="NKvHeads"/> KV heads of <see cref="HeadDim"/>, and
/// <see cref="PromptLength"/> prompt keys/values.
/// </summary>
public readonly record struct AdaptionPromptShape(int Rows, int NHeads, int NKvHeads, int HeadDim, int PromptLength)
{
    public int Group => NHeads / NKvHeads;
    public int QWidth => NHeads * HeadDim;
    public int KvWidth => NKvHeads * HeadDim;
    public double Scale => 1.0 / Math.Sqrt(HeadDim);
}

public static class AdaptionPromptReference
{
    /// <summary>
    /// p [rows, n_heads, P] = softmax_j(scale·q·K_jᵀ) per row and head, a [rows, n_heads·hd] = p·V (ungated) and
    /// out = base + gate·a, from q [rows, n_heads·hd], keys and values [P, n_kv·hd] and base [rows, n_heads·hd].
    /// </summary>
    public static (double[] Probs, double[] Ungated, double[] Out) Forward(ReadOnlySpan<double> q, ReadOnlySpan<double> keys, ReadOnlySpan<double> values,
        double gate, ReadOnlySpan<double> baseOut, AdaptionPromptShape s)
    {
        int hd = s.HeadDim, np = s.PromptLength;
        var probs = new double[s.Rows * s.NHeads * np];
        var a = new double[s.Rows * s.QWidth];
        var o = new double[s.Rows * s.QWidth];
        for (int i = 0; i < s.Rows; i++)
            for (int h = 0; h < s.NHeads; h++)
            {
                int qb = i * s.QWidth + h * hd, kvOff = h / s.Group * hd, pb = (i * s.NHeads + h) * np;
                double max = double.NegativeInfinity;
                for (int j = 0; j < np; j++)
                {
                    double dot = 0;
                    for (int e = 0; e < hd; e++) dot += q[qb + e] * keys[j * s.KvWidth + kvOff + e];
                    probs[pb + j] = dot * s.Scale;
                    max = Math.Max(max, probs[pb + j]);
                }
                double sum = 0;
                for (int j = 0; j < np; j++) { probs[pb + j] = Math.Exp(probs[pb + j] - max); sum += probs[pb + j]; }
                for (int j = 0; j < np; j++) probs[pb + j] /= sum;
                for (int e = 0; e < hd; e++)
                {
                    double acc = 0;
                    for (int j = 0; j < np; j++) acc += probs[pb + j] * values[j * s.KvWidth + kvOff + e];
                    a[qb + e] = acc;
                    o[qb + e] = baseOut[qb + e] + gate * acc;
                }
            }
        return (probs, a, o);
    }

    /// <summary>
    /// From dout = ∂loss/∂out: ∂loss/∂q [rows, n_heads·hd], ∂loss/∂keys and ∂loss/∂values [P, n_kv·hd] and ∂loss/∂gate
    /// (∂loss/∂base is dout itself).
    /// </summary>
    public static (double[] Dq, double[] DKeys, double[] DValues, double DGate) Backward(ReadOnlySpan<double> q, ReadOnlySpan<double> keys,
        ReadOnlySpan<double> values, double gate, ReadOnlySpan<double> dOut, AdaptionPromptShape s)
    {
        int hd = s.HeadDim, np = s.PromptLength;
        var (probs, a, _) = Forward(q, keys, values, gate, new double[s.Rows * s.QWidth], s);
        var dq = new double[s.Rows * s.QWidth];
        var dk = new double[np * s.KvWidth];
        var dv = new double[np * s.KvWidth];
        double dGate = 0;
        var ds = new double[np];
        for (int i = 0; i < s.Rows; i++)
            for (int h = 0; h < s.NHeads; h++)
            {
                int qb = i * s.QWidth + h * hd, kvOff = h / s.Group * hd, pb = (i * s.NHeads + h) * np;
                double d = 0;
                for (int e = 0; e < hd; e++) d += dOut[qb + e] * a[qb + e];
                dGate += d;
                for (int j = 0; j < np; j++)
                {
                    double dp = 0;
                    for (int e = 0; e < hd; e++)
                    {
                        dp += dOut[qb + e] * values[j * s.KvWidth + kvOff + e];
                        dv[j * s.KvWidth + kvOff + e] += gate * probs[pb + j] * dOut[qb + e];
                    }
                    ds[j] = s.Scale * gate * probs[pb + j] * (dp - d);
                }
                for (int j = 0; j < np; j++)
                    for (int e = 0; e < hd; e++)
                    {
                        dq[qb + e] += ds[j] * keys[j * s.KvWidth + kvOff + e];
                        dk[j * s.KvWidth + kvOff + e] += ds[j] * q[qb + e];
                    }
            }
        return (dq, dk, dv, dGate);
    }
}
