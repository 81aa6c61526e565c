// Float64 references for the Llama layer ops (embedding, RMSNorm, RoPE, SwiGLU, cross-entropy, AdamW): forward and backward.
namespace VkPeft.Runtime.Reference;

/// <summary>
/// What the layer kernels compute, in float64. Inputs are double arrays (tests promote the fp32 data the GPU sees) so the
/// same functions serve finite-difference gradient checks. Row-major layouts throughout.
/// </summary>
public static class LayerReference
{
    public static double[] ToDouble(ReadOnlySpan<float> x)
    {
        var d = new double[x.Length];
        for (int i = 0; i < x.Length; i++) d[i] = x[i];
        return d;
    }

    // ---- embedding ----

    /// <summary>y[t, :] = table[ids[t], :]; zeros for ids outside [0, vocab).</summary>
    public static double[] EmbeddingForward(double[] table, int vocab, int dim, int[] ids)
    {
        var y = new double[ids.Length * dim];
        for (int t = 0; t < ids.Length; t++)
            if (ids[t] >= 0 && ids[t] < vocab) Array.Copy(table, (long)ids[t] * dim, y, (long)t * dim, dim);
        return y;
    }

    /// <summary>dTable = initial + Σ_t onehot(ids[t]) ⊗ dy[t, :] (ids outside [0, vocab) contribute nothing).</summary>
    public static double[] EmbeddingBackward(int[] ids, double[] dy, int vocab, int dim, double[]? initial = null)
    {
        var d = initial is null ? new double[vocab * dim] : (double[])initial.Clone();
        for (int t = 0; t < ids.Length; t++)
            if (ids[t] >= 0 && ids[t] < vocab)
                for (int c = 0; c < dim; c++) d[ids[t] * dim + c] += dy[t * dim + c];
        return d;
    }

    // ---- RMSNorm: y = x·rstd ⊙ w, rstd = 1/sqrt(mean(x²) + eps) ----

    public static (double[] Y, double[] Rstd) RmsNormForward(double[] x, double[] w, int rows, int dim, double eps)
    {
        var y = new double[rows * dim];
        var rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int c = 0; c < dim; c++) ss += x[r * dim + c] * x[r * dim + c];
            rstd[r] = 1 / Math.Sqrt(ss / dim + eps);
            for (int c = 0; c < dim; c++) y[r * dim + c] = x[r * dim + c] * rstd[r] * w[c];
        }
        return (y, rstd);
    }

    /// <summary>dx = rstd·(w ⊙ dy) − x·rstd³·Σ(w ⊙ dy ⊙ x)/dim; dw = Σ_rows dy ⊙ x·rstd.</summary>
    public static (double[] Dx, double[] Dw) RmsNormBackward(double[] x, double[] w, double[] dy, int rows, int dim, double eps)
    {
        var dx = new double[rows * dim];
        var dw = new double[dim];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0, dot = 0;
            for (int c = 0; c < dim; c++)
            {
                double v = x[r * dim + c];
                ss += v * v;
                dot += w[c] * dy[r * dim + c] * v;
            }
            double rs = 1 / Math.Sqrt(ss / dim + eps);
            double k = rs * rs * rs * dot / dim;
            for (int c = 0; c < dim; c++)
            {
                dx[r * dim + c] = rs * w[c] * dy[r * dim + c] - k * x[r * dim + c];
                dw[c] += dy[r * dim + c] * x[r * dim + c] * rs;
            }
        }
        return (dx, dw);
    }

    // ---- RoPE ----

    /// <summary>
    /// Rotates each pair of every head of x [rows, rowElems] by θ = pos·invFreq[i] (−θ when inverse), pos = startPos +
    /// (t mod seqLen) (seqLen 0: no wrap). Pairs (2i, 2i+1), or (i, i + headDim/2) when rotateHalf.
    /// </summary>
    public static double[] Rope(double[] x, double[] invFreq, int rows, int rowElems, int headDim, bool rotateHalf, long startPos = 0, long seqLen = 0, bool inverse = false)
    {
        var y = (double[])x.Clone();
        int half = headDim / 2;
        for (int t = 0; t < rows; t++)
        {
            long pos = startPos + (seqLen > 0 ? t % seqLen : t);
            for (int h = 0; h < rowElems / headDim; h++)
                for (int i = 0; i < half; i++)
                {
                    double angle = pos * invFreq[i] * (inverse ? -1 : 1);
                    double cos = Math.Cos(angle), sin = Math.Sin(angle);
                    int a = t * rowElems + h * headDim + (rotateHalf ? i : 2 * i);
                    int b = rotateHalf ? a + half : a + 1;
                    double x0 = x[a], x1 = x[b];
                    y[a] = x0 * cos - x1 * sin;
                    y[b] = x0 * sin + x1 * cos;
                }
        }
        return y;
    }

    // ---- SwiGLU: h = silu(g) ⊙ u ----

    private static double Sigmoid(double g) => 1 / (1 + Math.Exp(-g));

    public static double[] SwiGluForward(double[] g, double[] u)
    {
        var h = new double[g.Length];
        for (int i = 0; i < g.Length; i++) h[i] = g[i] * Sigmoid(g[i]) * u[i];
        return h;
    }

    public static (double[] Dg, double[] Du) SwiGluBackward(double[] g, double[] u, double[] dh)
    {
        var dg = new double[g.Length];
        var du = new double[g.Length];
        for (int i = 0; i < g.Length; i++)
        {
            double s = Sigmoid(g[i]);
            dg[i] = dh[i] * u[i] * s * (1 + g[i] * (1 - s));
            du[i] = dh[i] * g[i] * s;
        }
        return (dg, du);
    }

    // ---- cross-entropy ----

    /// <summary>
    /// loss[r] = logsumexp(z[r, :]) − z[r, target] (0 for a negative target), and dz = (softmax − onehot)·scale (0 on
    /// masked rows): the gradient of scale·Σ loss.
    /// </summary>
    public static (double[] Loss, double[] Dz) CrossEntropy(double[] z, int[] targets, int rows, int cols, double scale)
    {
        var loss = new double[rows];
        var dz = new double[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] < 0) continue;
            double m = double.NegativeInfinity, s = 0;
            for (int c = 0; c < cols; c++) m = Math.Max(m, z[r * cols + c]);
            for (int c = 0; c < cols; c++) s += Math.Exp(z[r * cols + c] - m);
            loss[r] = m + Math.Log(s) - z[r * cols + targets[r]];
            for (int c = 0; c < cols; c++) dz[r * cols + c] = (Math.Exp(z[r * cols + c] - m) / s - (c == targets[r] ? 1 : 0)) * scale;
        }
        return (loss, dz);
    }

    // ---- optimizer ----

    /// <summary>
    /// torch.optim.AdamW (single-tensor path, amsgrad off), step counted from 1, in float64:
    /// g = grad·gradScale; p ← p·(1 − lr·wd); m ← m + (1 − β1)(g − m) (torch's lerp_); v ← β2·v + (1 − β2)·g²;
    /// p ← p − lr/(1 − β1^step) · m / (sqrt(v)/sqrt(1 − β2^step) + eps). Updates p, m, v in place.
    /// </summary>
    public static void AdamWStep(double[] p, double[] grad, double[] m, double[] v, long step, double lr, double beta1, double beta2, double eps, double weightDecay, double gradScale = 1)
    {
        double stepSize = lr / (1 - Math.Pow(beta1, step));
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, step));
        for (int i = 0; i < p.Length; i++)
        {
            double g = grad[i] * gradScale;
            p[i] *= 1 - lr * weightDecay;
            m[i] += (1 - beta1) * (g - m[i]);
            v[i] = beta2 * v[i] + (1 - beta2) * g * g;
            p[i] -= stepSize * m[i] / (Math.Sqrt(v[i]) / bc2Sqrt + eps);
        }
    }

    public static double SumOfSquares(ReadOnlySpan<float> x)
    {
        double s = 0;
        foreach (float v in x) s += (double)v * v;
        return s;
    }
}
