// Float64 references of DoRA's kernels (runtime/Kernels/DoraOps.cs): per-row squared norms of a weight, the row norm of
// W0 + s·B·A both materialized and from rank-sized terms (the cheap identity the device uses), and column scaling.
namespace VkPeft.Runtime.Reference;

public static class DoraReference
{
    /// <summary>out[j] = Σ_i w[j, i]² of w [rows, cols].</summary>
    public static double[] RowSquaredNorms(ReadOnlySpan<double> w, int rows, int cols)
    {
        var r = new double[rows];
        for (int j = 0; j < rows; j++)
        {
            double s = 0;
            for (int i = 0; i < cols; i++) s += w[j * cols + i] * w[j * cols + i];
            r[j] = s;
        }
        return r;
    }

    /// <summary>‖W0_j + s·(B·A)_j‖ with the update formed: w0 [out, in], b [out, r], a [r, in].</summary>
    public static double[] MaterializedRowNorms(double[] w0, double[] b, double[] a, double s, int outF, int inF, int rank)
    {
        var n = new double[outF];
        for (int j = 0; j < outF; j++)
        {
            double sum = 0;
            for (int i = 0; i < inF; i++)
            {
                double ba = 0;
                for (int k = 0; k < rank; k++) ba += b[j * rank + k] * a[k * inF + i];
                double v = w0[j * inF + i] + s * ba;
                sum += v * v;
            }
            n[j] = Math.Sqrt(sum);
        }
        return n;
    }

    /// <summary>A·W0ᵀ [r, out] (w0 [out, in], a [r, in]).</summary>
    public static double[] ATimesW0T(double[] w0, double[] a, int outF, int inF, int rank)
    {
        var ct = new double[rank * outF];
        for (int k = 0; k < rank; k++)
            for (int j = 0; j < outF; j++)
            {
                double s = 0;
                for (int i = 0; i < inF; i++) s += a[k * inF + i] * w0[j * inF + i];
                ct[k * outF + j] = s;
            }
        return ct;
    }

    /// <summary>B·(A·Aᵀ) [out, r] (b [out, r], a [r, in]).</summary>
    public static double[] BTimesGram(double[] b, double[] a, int outF, int inF, int rank)
    {
        var g = new double[rank * rank];
        for (int k = 0; k < rank; k++)
            for (int l = 0; l < rank; l++)
            {
                double s = 0;
                for (int i = 0; i < inF; i++) s += a[k * inF + i] * a[l * inF + i];
                g[k * rank + l] = s;
            }
        var bg = new double[outF * rank];
        for (int j = 0; j < outF; j++)
            for (int l = 0; l < rank; l++)
            {
                double s = 0;
                for (int k = 0; k < rank; k++) s += b[j * rank + k] * g[k * rank + l];
                bg[j * rank + l] = s;
            }
        return bg;
    }

    /// <summary>
    /// The cheap exact norm: n_j = √(w2_j + Σ_k B[j,k]·(2s·Ct[k,j] + s²·BG[j,k])) (w2 = ‖W0_j‖², Ct = A·W0ᵀ [r, out],
    /// BG = B·A·Aᵀ [out, r]), with scale_j = m_j / n_j and invN_j = 1 / n_j. Also returns Σ_k |each term| per row, the
    /// magnitude the rounding error of the fp32 sum scales with.
    /// </summary>
    public static (double[] N, double[] Scale, double[] InvN, double[] AbsTerms) NormScale(double[] w2, double[] b, double[] ct, double[] bg, double[] m,
        double s, int outF, int rank)
    {
        var (n, scale, inv, abs) = (new double[outF], new double[outF], new double[outF], new double[outF]);
        for (int j = 0; j < outF; j++)
        {
            double acc = 0, absAcc = Math.Abs(w2[j]);
            for (int k = 0; k < rank; k++)
            {
                double term = b[j * rank + k] * (2 * s * ct[k * outF + j] + s * s * bg[j * rank + k]);
                acc += term;
                absAcc += Math.Abs(b[j * rank + k]) * (Math.Abs(2 * s * ct[k * outF + j]) + Math.Abs(s * s * bg[j * rank + k]));
            }
            n[j] = Math.Sqrt(Math.Max(w2[j] + acc, 0));
            scale[j] = m[j] / n[j];
            inv[j] = 1 / n[j];
            abs[j] = absAcc;
        }
        return (n, scale, inv, abs);
    }

    /// <summary>y[t, j] = x[t, j]·v[j] over rows of v.Length.</summary>
    public static double[] ScaleColumns(double[] x, double[] v)
    {
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * v[i % v.Length];
        return y;
    }
}
