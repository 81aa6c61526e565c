// Pure-C# references for the basic kernels, accumulating in float64: what the shaders must compute.
using System.Numerics.Tensors;

namespace VkPeft.Runtime.Reference;

public static class CpuReference
{
    public static float[] Add(float[] a, float[] b) { var c = new float[a.Length]; TensorPrimitives.Add(a, b, c); return c; }

    public static float[] Mul(float[] a, float[] b) { var c = new float[a.Length]; TensorPrimitives.Multiply(a, b, c); return c; }

    public static float[] Scale(float[] a, float alpha, float beta)
    {
        var c = new float[a.Length];
        for (int i = 0; i < a.Length; i++) c[i] = MathF.FusedMultiplyAdd(alpha, a[i], beta);
        return c;
    }

    public static double[] SumRows(float[] x, int rows, int cols)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int c = 0; c < cols; c++) s += x[r * cols + c];
            y[r] = s;
        }
        return y;
    }

    public static float[] MaxRows(float[] x, int rows, int cols)
    {
        var y = new float[rows];
        for (int r = 0; r < rows; r++) y[r] = TensorPrimitives.Max(x.AsSpan(r * cols, cols));
        return y;
    }

    public static double[] SoftmaxRows(float[] x, int rows, int cols)
    {
        var y = new double[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            double m = double.NegativeInfinity, s = 0;
            for (int c = 0; c < cols; c++) m = Math.Max(m, x[r * cols + c]);
            for (int c = 0; c < cols; c++) s += Math.Exp(x[r * cols + c] - m);
            for (int c = 0; c < cols; c++) y[r * cols + c] = Math.Exp(x[r * cols + c] - m) / s;
        }
        return y;
    }

    /// <summary>
    /// C = A[M,K]·op(B) in float64; also returns Σ|a||b| per output, from which an fp32 error bound follows
    /// (recursive fp32 summation of K products: |error| ≤ γ_K Σ|a||b|, γ_K ≈ K·2⁻²⁴).
    /// </summary>
    public static (double[] C, double[] AbsSum) MatMul(float[] a, float[] b, int m, int n, int k, bool transposeB)
    {
        var c = new double[m * n];
        var abs = new double[m * n];
        Parallel.For(0, m, i =>
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0, sa = 0;
                for (int p = 0; p < k; p++)
                {
                    double av = a[i * k + p], bv = transposeB ? b[j * k + p] : b[p * n + j];
                    s += av * bv;
                    sa += Math.Abs(av * bv);
                }
                c[i * n + j] = s;
                abs[i * n + j] = sa;
            }
        });
        return (c, abs);
    }
}
