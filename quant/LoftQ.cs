// LoftQ initialization (Li et al., "LoftQ: LoRA-Fine-Tuning-Aware Quantization", PEFT loftq_utils.loftq_init):
// alternate quantizing W − s·B·A and a rank-r truncated SVD of the residual W − Q, so that Q + s·B·A approximates the
// full-precision W better than the quantized W alone. The quantizer is a parameter (the caller passes the runtime's
// own NF4/FP4 ± double-quant codec, so Q is bit for bit what the kernels decode). The residual's rank-r SVD is the
// randomized subspace iteration of TruncatedSvd (float64), not a full SVD: fast, and as close as LoftQ needs.
namespace VkPeft.Quant;

/// <summary>One LoftQ initialization of a linear weight [out, in].</summary>
/// <param name="BackboneInput">[out, in] the weight whose quantization is the trained base: W − s·B·A of the previous
/// iteration (W itself for one iteration), so quantizing it with the same codec gives Q bit for bit.</param>
/// <param name="Base">[out, in] Q dequantized: the base the adapter corrects.</param>
/// <param name="A">[rank, in] lora_A.</param>
/// <param name="B">[out, rank] lora_B.</param>
/// <param name="ErrorBefore">‖W − Q(W)‖_F: the error of the plain quantized base (QLoRA, B = 0).</param>
/// <param name="Errors">‖W − (Q_t + s·B_t·A_t)‖_F after each iteration t = 1…k.</param>
public sealed record LoftQResult(float[] BackboneInput, float[] Base, float[] A, float[] B, double ErrorBefore, double[] Errors)
{
    public double ErrorAfter => Errors[^1];
}

public static class LoftQ
{
    /// <summary>
    /// LoftQ for one weight. <paramref name="quantizeDequantize"/> maps a [out, in] weight to its quantized-then-decoded
    /// values. <paramref name="scaling"/> is the LoRA scaling s = alpha / r (or alpha / √r): the SVD factors are divided
    /// by √s each, so that s·B·A (what the runtime adds) is the rank-r approximation of the residual for any alpha —
    /// PEFT's loftq_init leaves s out and is exact only when s = 1.
    /// </summary>
    public static LoftQResult Initialize(float[] weight, int outF, int inF, int rank, double scaling, int iterations,
        Func<float[], float[]> quantizeDequantize, int seed, int powerIterations = 6)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(quantizeDequantize);
        if ((long)outF * inF != weight.LongLength) throw new ArgumentException($"weight holds {weight.LongLength} values, not {outF} x {inF}", nameof(weight));
        if (rank < 1 || rank > Math.Min(outF, inF)) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 1..{Math.Min(outF, inF)}");
        if (iterations < 1) throw new ArgumentOutOfRangeException(nameof(iterations), iterations, "at least one LoftQ iteration");
        if (!(scaling > 0) || !double.IsFinite(scaling)) throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "LoRA scaling must be positive");
        long n = weight.LongLength;
        var backbone = weight;
        float[] q = quantizeDequantize(weight);
        double before = Distance(weight, q, null);
        var errors = new double[iterations];
        float[] a = [], b = [];
        var residual = new double[n];
        var lowRank = new float[n];
        double inv = 1 / Math.Sqrt(scaling);
        for (int it = 0; it < iterations; it++)
        {
            if (it > 0)
            {
                backbone = new float[n];
                for (long i = 0; i < n; i++) backbone[i] = (float)(weight[i] - (double)lowRank[i]);
                q = quantizeDequantize(backbone);
            }
            for (long i = 0; i < n; i++) residual[i] = (double)weight[i] - q[i];
            var (u, s, vt) = TruncatedSvd.Compute(residual, outF, inF, rank, unchecked(seed + it), powerIterations);
            b = new float[(long)outF * rank];
            a = new float[(long)rank * inF];
            for (int k = 0; k < rank; k++)
            {
                double root = Math.Sqrt(s[k]) * inv;
                for (int o = 0; o < outF; o++) b[(long)o * rank + k] = (float)(u[(long)o * rank + k] * root);
                for (int j = 0; j < inF; j++) a[(long)k * inF + j] = (float)(vt[(long)k * inF + j] * root);
            }
            // s·B·A from the float32 factors, each element summed over k in order in float64 and rounded once.
            var (fa, fb) = (a, b);
            Parallel.For(0, outF, o =>
            {
                var acc = new double[inF];
                for (int k = 0; k < rank; k++)
                {
                    double bv = fb[(long)o * rank + k];
                    long ar = (long)k * inF;
                    for (int j = 0; j < inF; j++) acc[j] += bv * fa[ar + j];
                }
                for (int j = 0; j < inF; j++) lowRank[(long)o * inF + j] = (float)(scaling * acc[j]);
            });
            errors[it] = Distance(weight, q, lowRank);
        }
        return new LoftQResult(backbone, q, a, b, before, errors);
    }

    /// <summary>‖W − (Q + L)‖_F in float64 (L omitted: ‖W − Q‖_F).</summary>
    public static double Distance(float[] w, float[] q, float[]? lowRank)
    {
        double sum = 0;
        for (long i = 0; i < w.LongLength; i++)
        {
            double e = (double)w[i] - q[i] - (lowRank is null ? 0 : lowRank[i]);
            sum += e * e;
        }
        return Math.Sqrt(sum);
    }
}
