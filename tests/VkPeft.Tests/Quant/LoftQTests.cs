// LoftQ and its truncated SVD on test matrices (pure C#, float64): the randomized SVD recovers a known decomposition and
// is Eckart–Young-optimal up to a stated margin on a flat spectrum; LoftQ's error ‖W − (Q + s·B·A)‖ falls below the
// quantized base's and keeps falling over iterations, for alpha ≠ r too (the scaling is divided out of the factors),
// and quantizing the backbone it returns gives its Q bit for bit.
using VkPeft.Quant;

namespace VkPeft.Tests.Quant;

public sealed class LoftQTests
{
    /// <summary>[n, k] with orthonormal columns (Gram–Schmidt of a seeded Gaussian matrix).</summary>
    private static double[] Orthonormal(int n, int k, int seed)
    {
        var g = QuantTestData.Gaussian(n * k, seed);
        var a = new double[n * k];
        for (int j = 0; j < k; j++)
        {
            for (int r = 0; r < n; r++) a[r * k + j] = g[r * k + j];
            for (int i = 0; i < j; i++)
            {
                double dot = 0;
                for (int r = 0; r < n; r++) dot += a[r * k + i] * a[r * k + j];
                for (int r = 0; r < n; r++) a[r * k + j] -= dot * a[r * k + i];
            }
            double norm = Math.Sqrt(Enumerable.Range(0, n).Sum(r => a[r * k + j] * a[r * k + j]));
            for (int r = 0; r < n; r++) a[r * k + j] /= norm;
        }
        return a;
    }

    private static double Residual(double[] m, int rows, int cols, double[] u, double[] s, double[] vt, int rank)
    {
        double sum = 0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
            {
                double acc = m[i * cols + j];
                for (int k = 0; k < rank; k++) acc -= u[i * rank + k] * s[k] * vt[k * cols + j];
                sum += acc * acc;
            }
        return Math.Sqrt(sum);
    }

    [Fact]
    public void TruncatedSvdRecoversAKnownDecomposition()
    {
        // M = U·diag(σ)·Vᵀ, 70 x 45 (no multiple of any block), σ_i = 10·0.7^i: the top 5 triplets must come back.
        const int rows = 70, cols = 45, n = 45, rank = 5;
        var u0 = Orthonormal(rows, n, 1);
        var v0 = Orthonormal(cols, n, 2);
        var sigma = Enumerable.Range(0, n).Select(i => 10 * Math.Pow(0.7, i)).ToArray();
        var m = new double[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                for (int k = 0; k < n; k++) m[i * cols + j] += u0[i * n + k] * sigma[k] * v0[j * n + k];
        var (u, s, vt) = TruncatedSvd.Compute(m, rows, cols, rank, seed: 3);
        for (int k = 0; k < rank; k++)
        {
            Assert.Equal(sigma[k], s[k], 1e-9 * sigma[0]);   // float64 subspace iteration with a 0.7 gap per value: converged to rounding
            // Singular vectors up to sign: |⟨u_k, u0_k⟩| = |⟨v_k, v0_k⟩| = 1.
            double du = 0, dv = 0;
            for (int i = 0; i < rows; i++) du += u[i * rank + k] * u0[i * n + k];
            for (int j = 0; j < cols; j++) dv += vt[k * cols + j] * v0[j * n + k];
            Assert.Equal(1, Math.Abs(du), 1e-8);
            Assert.Equal(1, Math.Abs(dv), 1e-8);
            Assert.Equal(Math.Sign(du), Math.Sign(dv));
        }
        // Eckart–Young: the rank-5 residual is √(Σ_{i≥5} σ_i²).
        double optimal = Math.Sqrt(sigma.Skip(rank).Sum(x => x * x));
        Assert.Equal(optimal, Residual(m, rows, cols, u, s, vt, rank), 1e-9 * sigma[0]);
    }

    [Fact]
    public void TruncatedSvdIsNearOptimalOnAFlatSpectrum()
    {
        // A Gaussian 96 x 80 matrix (a quantization residual looks like this): no gap to find. The exact singular values
        // come from the Jacobi eigen-decomposition of MᵀM (the reference); the randomized rank-8 residual must be within
        // 1% of the optimal one (Halko et al. bound the excess by the tail; 6 power iterations make it small).
        const int rows = 96, cols = 80, rank = 8;
        var m = QuantTestData.Gaussian(rows * cols, 11).Select(x => (double)x).ToArray();
        var gram = new double[cols * cols];
        for (int a = 0; a < cols; a++)
            for (int b = 0; b < cols; b++)
            {
                double acc = 0;
                for (int r = 0; r < rows; r++) acc += m[r * cols + a] * m[r * cols + b];
                gram[a * cols + b] = acc;
            }
        var (eig, _) = TruncatedSvd.JacobiEigen(gram, cols);
        var exact = eig.Select(e => Math.Sqrt(Math.Max(e, 0))).OrderDescending().ToArray();
        var (u, s, vt) = TruncatedSvd.Compute(m, rows, cols, rank, seed: 5);
        double optimal = Math.Sqrt(exact.Skip(rank).Sum(x => x * x));
        double got = Residual(m, rows, cols, u, s, vt, rank);
        Assert.InRange(got, optimal * (1 - 1e-12), optimal * 1.01);
        for (int k = 0; k < rank; k++) Assert.InRange(s[k], exact[k] * 0.97, exact[k] * (1 + 1e-12));   // never above the true value
    }

    /// <summary>A weight-like test matrix: a rank-6 part plus Gaussian noise with a few outliers, [out, in].</summary>
    private static float[] TestWeight(int outF, int inF, int seed)
    {
        var g = QuantTestData.Gaussian(outF * inF, seed);
        var left = QuantTestData.Gaussian(outF * 6, seed + 1);
        var right = QuantTestData.Gaussian(6 * inF, seed + 2);
        var w = new float[outF * inF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                double acc = 0.02 * g[o * inF + i];
                for (int k = 0; k < 6; k++) acc += 0.01 * left[o * 6 + k] * right[k * inF + i];
                w[o * inF + i] = (float)acc;
            }
        for (int k = 0; k < 5; k++) w[(k * 997) % w.Length] *= 8;   // outliers, as real weights have
        return w;
    }

    [Theory]
    [InlineData(8, 1.0)]    // alpha = r: PEFT's case
    [InlineData(8, 2.0)]    // alpha = 2r: PEFT's loftq_init would double the correction here
    [InlineData(4, 0.25)]
    public void ErrorFallsMonotonicallyOverIterationsForAnyScaling(int rank, double scaling)
    {
        const int outF = 96, inF = 80;
        var w = TestWeight(outF, inF, 21);
        float[] Nf4Dq(float[] x) => QuantizedLinearWeight.Bnb4Bit(x, outF, inF, QuantType.Nf4, 64, true).Dequantize();
        var r = LoftQ.Initialize(w, outF, inF, rank, scaling, iterations: 5, Nf4Dq, seed: 9);
        Assert.True(r.Errors[0] < 0.9 * r.ErrorBefore, $"one iteration: {r.ErrorBefore} → {r.Errors[0]}");
        for (int i = 1; i < r.Errors.Length; i++)
            Assert.True(r.Errors[i] <= r.Errors[i - 1], $"iteration {i + 1}: {string.Join(", ", r.Errors)}");
        // The reported error is the one of the returned tensors: W − (Q + s·B·A), with Q the quantized backbone input.
        Assert.Equal(Nf4Dq(r.BackboneInput), r.Base);
        var lowRank = new float[w.Length];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
            {
                double acc = 0;
                for (int k = 0; k < rank; k++) acc += (double)r.B[o * rank + k] * r.A[k * inF + i];
                lowRank[o * inF + i] = (float)(scaling * acc);
            }
        Assert.Equal(r.ErrorAfter, LoftQ.Distance(w, r.Base, lowRank), 1e-12 * r.ErrorAfter);
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        var w = new float[12];
        Assert.Throws<ArgumentOutOfRangeException>(() => LoftQ.Initialize(w, 3, 4, 4, 1, 1, x => x, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LoftQ.Initialize(w, 3, 4, 2, 1, 0, x => x, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => LoftQ.Initialize(w, 3, 4, 2, 0, 1, x => x, 0));
        Assert.Throws<ArgumentException>(() => LoftQ.Initialize(w, 3, 5, 2, 1, 1, x => x, 0));
    }
}
