// Finite-difference checks of the float64 layer references: every backward agrees with central differences of its forward.
using VkPeft.Runtime.Reference;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Ops;

public sealed class ReferenceGradientTests
{
    private const double H = 1e-5;           // central differences: truncation O(H²) ≈ 1e-10, rounding O(ε/H) ≈ 1e-11
    private const double MaxRelError = 1e-6;

    private static double[] Rand(int n, int seed, double std = 1) => LayerReference.ToDouble(TestData.Normal(n, seed, (float)std));

    private static double Dot(double[] a, double[] b) { double s = 0; for (int i = 0; i < a.Length; i++) s += a[i] * b[i]; return s; }

    /// <summary>Compares an analytic gradient of loss(x) with central differences, element by element.</summary>
    private static void Check(Func<double[], double> loss, double[] x, double[] analytic, string what)
    {
        Assert.Equal(x.Length, analytic.Length);
        double floor = 1e-3 * Math.Max(analytic.Max(Math.Abs), 1e-12);   // relative error of near-zero entries is measured against this
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + H; double up = loss(x);
            x[i] = keep - H; double down = loss(x);
            x[i] = keep;
            double fd = (up - down) / (2 * H);
            double rel = Math.Abs(fd - analytic[i]) / Math.Max(Math.Max(Math.Abs(fd), Math.Abs(analytic[i])), floor);
            worst = Math.Max(worst, rel);
            Assert.True(rel < MaxRelError, $"{what}[{i}]: finite difference {fd}, analytic {analytic[i]} (relative error {rel:G3})");
        }
        Assert.True(worst < MaxRelError);
    }

    [Fact]
    public void EmbeddingBackwardIsTheGradientOfTheLookup()
    {
        const int vocab = 7, dim = 5;
        int[] ids = [3, 0, 3, 6, -1, 3, 7, 0];   // duplicates and two invalid ids
        var table = Rand(vocab * dim, 1);
        var dy = Rand(ids.Length * dim, 2);
        var grad = LayerReference.EmbeddingBackward(ids, dy, vocab, dim);
        Check(t => Dot(dy, LayerReference.EmbeddingForward(t, vocab, dim, ids)), table, grad, "dTable");
        Assert.All(grad.AsSpan(1 * dim, dim).ToArray(), g => Assert.Equal(0, g));   // row 1 never looked up
    }

    [Theory]
    [InlineData(3, 7, 1e-5)]
    [InlineData(2, 16, 1e-6)]
    public void RmsNormBackwardIsTheGradient(int rows, int dim, double eps)
    {
        var x = Rand(rows * dim, 3);
        var w = Rand(dim, 4);
        var dy = Rand(rows * dim, 5);
        var (dx, dw) = LayerReference.RmsNormBackward(x, w, dy, rows, dim, eps);
        Check(v => Dot(dy, LayerReference.RmsNormForward(v, w, rows, dim, eps).Y), x, dx, "dx");
        Check(v => Dot(dy, LayerReference.RmsNormForward(x, v, rows, dim, eps).Y), w, dw, "dw");
    }

    [Theory]
    [InlineData(false, 0L, 0L)]
    [InlineData(true, 0L, 0L)]
    [InlineData(false, 100L, 3L)]
    [InlineData(true, 4096L, 2L)]
    public void RopeBackwardIsTheInverseRotation(bool rotateHalf, long startPos, long seqLen)
    {
        const int rows = 5, headDim = 6, rowElems = 2 * headDim;
        var invFreq = Enumerable.Range(0, headDim / 2).Select(i => Math.Pow(10000, -2.0 * i / headDim)).ToArray();
        var x = Rand(rows * rowElems, 6);
        var dy = Rand(rows * rowElems, 7);
        var dx = LayerReference.Rope(dy, invFreq, rows, rowElems, headDim, rotateHalf, startPos, seqLen, inverse: true);
        Check(v => Dot(dy, LayerReference.Rope(v, invFreq, rows, rowElems, headDim, rotateHalf, startPos, seqLen)), x, dx, "dx");
        // Rotations are orthogonal: the inverse undoes the forward exactly (up to rounding).
        var back = LayerReference.Rope(LayerReference.Rope(x, invFreq, rows, rowElems, headDim, rotateHalf, startPos, seqLen), invFreq, rows, rowElems, headDim, rotateHalf, startPos, seqLen, true);
        for (int i = 0; i < x.Length; i++) Assert.Equal(x[i], back[i], 1e-12);
    }

    [Fact]
    public void RopeLayoutsAgreeWithTheReferenceModelConventions()
    {
        // Position 1, one head of 4: interleaved rotates (x0, x1) by f0 and (x2, x3) by f1; rotate-half pairs (x0, x2), (x1, x3).
        double[] x = [1, 2, 3, 4], f = [0.5, 0.25];
        var inter = LayerReference.Rope(x, f, 1, 4, 4, false, startPos: 1);
        Assert.Equal(1 * Math.Cos(0.5) - 2 * Math.Sin(0.5), inter[0], 1e-15);
        Assert.Equal(3 * Math.Sin(0.25) + 4 * Math.Cos(0.25), inter[3], 1e-15);
        var half = LayerReference.Rope(x, f, 1, 4, 4, true, startPos: 1);
        Assert.Equal(1 * Math.Cos(0.5) - 3 * Math.Sin(0.5), half[0], 1e-15);
        Assert.Equal(2 * Math.Sin(0.25) + 4 * Math.Cos(0.25), half[3], 1e-15);
    }

    [Fact]
    public void SwiGluBackwardIsTheGradient()
    {
        const int n = 23;
        var g = Rand(n, 8, 3);
        var u = Rand(n, 9);
        var dh = Rand(n, 10);
        var (dg, du) = LayerReference.SwiGluBackward(g, u, dh);
        Check(v => Dot(dh, LayerReference.SwiGluForward(v, u)), g, dg, "dg");
        Check(v => Dot(dh, LayerReference.SwiGluForward(g, v)), u, du, "du");
    }

    [Fact]
    public void CrossEntropyGradientIsScaledSoftmaxMinusOneHot()
    {
        const int rows = 4, cols = 9;
        int[] targets = [2, -1, 8, 0];
        var z = Rand(rows * cols, 11, 3);
        for (int c = 0; c < cols; c++) z[2 * cols + c] += 500;   // a shifted row: max subtraction keeps exp finite
        const double scale = 1.0 / 3;
        var (loss, dz) = LayerReference.CrossEntropy(z, targets, rows, cols, scale);
        Check(v => scale * LayerReference.CrossEntropy(v, targets, rows, cols, scale).Loss.Sum(), z, dz, "dz");
        Assert.Equal(0, loss[1]);
        Assert.All(dz.AsSpan(cols, cols).ToArray(), d => Assert.Equal(0, d));
        // Loss of a uniform row is log(cols).
        var (uniform, _) = LayerReference.CrossEntropy(new double[cols], [4], 1, cols, 1);
        Assert.Equal(Math.Log(cols), uniform[0], 1e-14);
    }

    [Fact]
    public void AdamWFirstStepIsDecayPlusSignDescent()
    {
        // Step 1 from m = v = 0: m̂ = g, v̂ = g², so p1 = p0·(1 − lr·wd) − lr·g / (|g| + eps), whatever β1, β2.
        const double lr = 1e-2, wd = 0.1, eps = 1e-8, b1 = 0.9, b2 = 0.999, gs = 0.5;
        var p = Rand(17, 12);
        var g = Rand(17, 13);
        var p0 = (double[])p.Clone();
        var m = new double[17];
        var v = new double[17];
        LayerReference.AdamWStep(p, g, m, v, 1, lr, b1, b2, eps, wd, gs);
        for (int i = 0; i < p.Length; i++)
        {
            double gi = g[i] * gs;
            Assert.Equal(p0[i] * (1 - lr * wd) - lr * gi / (Math.Abs(gi) + eps), p[i], 1e-15);
            Assert.Equal((1 - b1) * gi, m[i], 1e-15);
            Assert.Equal((1 - b2) * gi * gi, v[i], 1e-15);
        }
        // Step 2 by hand for one element: bias corrections 1 − β^2.
        double m2 = m[0] + (1 - b1) * (g[1] - m[0]), v2 = b2 * v[0] + (1 - b2) * g[1] * g[1];
        double expected = p[0] * (1 - lr * wd) - lr / (1 - b1 * b1) * m2 / (Math.Sqrt(v2) / Math.Sqrt(1 - b2 * b2) + eps);
        double[] p2 = [p[0]], mm = [m[0]], vv = [v[0]];
        LayerReference.AdamWStep(p2, [g[1]], mm, vv, 2, lr, b1, b2, eps, wd);
        Assert.Equal(expected, p2[0], 1e-15);
    }
}
