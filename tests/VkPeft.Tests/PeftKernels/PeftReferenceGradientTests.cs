// Finite-difference checks of the float64 PEFT references: each backward is the gradient of its forward, and the Aᵀ·B
// product is the weight gradient of a linear layer and of a LoRA adapter.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Tests.Support;
using R = VkPeft.Runtime.Reference.PeftKernelReference;

namespace VkPeft.Tests.PeftKernels;

public sealed class PeftReferenceGradientTests
{
    private const double H = 1e-5;           // central differences: truncation O(H²·f‴) ≈ 1e-10, rounding O(ε/H) ≈ 1e-11
    private const double MaxRelError = 1e-6;

    private static double[] Rand(int n, int seed, double std = 1) => LayerReference.ToDouble(TestData.Normal(n, seed, (float)std));

    private static double Dot(double[] a, double[] b) { double s = 0; for (int i = 0; i < a.Length; i++) s += a[i] * b[i]; return s; }

    /// <summary>Compares an analytic gradient of loss(x) with central differences, element by element.</summary>
    internal static void Check(Func<double[], double> loss, double[] x, double[] analytic, string what)
    {
        Assert.Equal(x.Length, analytic.Length);
        double floor = 1e-3 * Math.Max(analytic.Max(Math.Abs), 1e-12);   // relative error of near-zero entries is measured against this
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + H; double up = loss(x);
            x[i] = keep - H; double down = loss(x);
            x[i] = keep;
            double fd = (up - down) / (2 * H);
            double rel = Math.Abs(fd - analytic[i]) / Math.Max(Math.Max(Math.Abs(fd), Math.Abs(analytic[i])), floor);
            Assert.True(rel < MaxRelError, $"{what}[{i}]: finite difference {fd}, analytic {analytic[i]} (relative error {rel:G3})");
        }
    }

    [Theory]
    [InlineData(ActivationKind.Relu)]
    [InlineData(ActivationKind.Silu)]
    [InlineData(ActivationKind.Gelu)]
    [InlineData(ActivationKind.Tanh)]
    public void ActivationBackwardIsTheGradient(ActivationKind kind)
    {
        var x = Rand(41, 1, 3);
        for (int i = 0; i < x.Length; i++) if (Math.Abs(x[i]) < 1e-3) x[i] = 0.5;   // keep ReLU's kink out of the stencil
        var dy = Rand(41, 2);
        Check(v => Dot(dy, R.ActivationForward(kind, v)), x, R.ActivationBackward(kind, x, dy), $"d{kind}");
    }

    [Fact]
    public void GeluIsTheTanhApproximation()
    {
        // Known values of 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) (PyTorch gelu(approximate="tanh")).
        Assert.Equal(0.8411919906082768, R.ActivationValue(ActivationKind.Gelu, 1), 1e-15);
        Assert.Equal(-0.04540230591222, R.ActivationValue(ActivationKind.Gelu, -2), 1e-13);
        Assert.Equal(0.5, R.ActivationDerivative(ActivationKind.Gelu, 0), 1e-15);
        Assert.Equal(0.7310585786300049, R.ActivationValue(ActivationKind.Silu, 1), 1e-15);
        // The x·σ(2z) evaluation is the tanh formula itself wherever 1 + tanh does not cancel.
        for (double x = -4; x <= 6; x += 0.125)
        {
            double t = Math.Tanh(R.GeluC * (x + R.GeluA * x * x * x));
            Assert.Equal(0.5 * x * (1 + t), R.ActivationValue(ActivationKind.Gelu, x), 1e-14);
            Assert.Equal(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * R.GeluC * (1 + 3 * R.GeluA * x * x), R.ActivationDerivative(ActivationKind.Gelu, x), 1e-14);
        }
        // In the far left tail it keeps relative accuracy: GELU(−10) = −10·σ(2z) ≈ −1.204e-37, where 1 + tanh gives 0.
        Assert.Equal(-1.2040923482098023e-37, R.ActivationValue(ActivationKind.Gelu, -10), 1e-50);
    }

    [Fact]
    public void GroupPoolBackwardIsTheGradient()
    {
        const int m = 3, k = 12, g = 4;
        var x = Rand(m * k, 3);
        var dy = Rand(m * k / g, 4);
        Check(v => Dot(dy, R.GroupPoolForward(v, m, k, g)), x, R.GroupPoolBackward(dy, m, k, g), "dx");
    }

    [Fact]
    public void BiasGradIsTheGradient()
    {
        const int m = 5, n = 7;
        var y = Rand(m * n, 5);
        var b = Rand(n, 6);
        var dy = Rand(m * n, 7);
        Check(v => Dot(dy, R.BiasAdd(y, v)), b, R.BiasGrad(dy, n), "db");
        Check(v => Dot(dy, R.BiasAdd(v, b)), y, dy, "dy passes through");
    }

    [Fact]
    public void DropoutBackwardIsTheGradient()
    {
        var x = Rand(50, 8);
        var dy = Rand(50, 9);
        const float p = 0.4f;
        Check(v => Dot(dy, R.DropoutApply(v, p, 17)), x, R.DropoutApply(dy, p, 17), "dx");
    }

    [Fact]
    public void MatMulTnIsTheWeightGradientOfALinearLayer()
    {
        const int m = 6, k = 5, n = 4;   // y = x·Wᵀ, x [m,k], W [n,k]
        var x = Rand(m * k, 10);
        var w = Rand(n * k, 11);
        var dy = Rand(m * n, 12);
        var (dw, _) = R.MatMulTn(dy, x, m, n, k);
        Check(v => Dot(dy, R.Linear(x, v, m, k, n)), w, dw, "dW = dyᵀ·x");
    }

    [Fact]
    public void MatMulTnGivesBothLoraGradients()
    {
        // y = s·(x·Aᵀ)·Bᵀ with A [r,in], B [out,r]: dB = s·dyᵀ·t (t = x·Aᵀ), dA = s·dtᵀ·x (dt = dy·B).
        const int m = 7, din = 6, r = 3, dout = 5;
        const double s = 0.75;
        var x = Rand(m * din, 13);
        var a = Rand(r * din, 14);
        var b = Rand(dout * r, 15);
        var dy = Rand(m * dout, 16);
        double Loss(double[] av, double[] bv) => s * Dot(dy, R.Linear(R.Linear(x, av, m, din, r), bv, m, r, dout));
        var t = R.Linear(x, a, m, din, r);
        var dt = new double[m * r];
        for (int i = 0; i < m; i++) for (int j = 0; j < r; j++) for (int o = 0; o < dout; o++) dt[i * r + j] += dy[i * dout + o] * b[o * r + j];
        var (dB, _) = R.MatMulTn(dy, t, m, dout, r, alpha: s);
        var (dA, _) = R.MatMulTn(dt, x, m, r, din, alpha: s);
        Check(v => Loss(a, v), b, dB, "dB");
        Check(v => Loss(v, b), a, dA, "dA");
        // beta accumulates: C = alpha·Aᵀ·B + beta·C.
        var c0 = Rand(dout * r, 17);
        var (acc, _) = R.MatMulTn(dy, t, m, dout, r, alpha: s, beta: -2, c: c0);
        for (int i = 0; i < acc.Length; i++) Assert.Equal(dB[i] - 2 * c0[i], acc[i], 1e-12);
    }

    [Fact]
    public void DropoutUniformsAreUniformAndIndependent()
    {
        // 2²⁰ draws: mean 1/2 (σ = 0.289/√n ≈ 2.8e-4), and P(keep_i ∧ keep_i+1) and P(keep under both seeds) ≈ (1 − p)².
        const int n = 1 << 20;
        const float p = 0.3f;
        var m1 = R.DropoutMask(123, n, p);
        var m2 = R.DropoutMask(124, n, p);
        double mean = 0;
        for (int i = 0; i < 4096; i++) mean += R.DropoutUniform(7, i);
        Assert.InRange(mean / 4096, 0.5 - 5 * 0.2887 / 64, 0.5 + 5 * 0.2887 / 64);
        double q = 1 - p, sigma1 = Math.Sqrt(p * q / n), sigma2 = Math.Sqrt(q * q * (1 - q * q) / n);
        Assert.InRange(m1.Count(k => k) / (double)n, q - 5 * sigma1, q + 5 * sigma1);
        int adjacent = 0, both = 0;
        for (int i = 0; i + 1 < n; i++) if (m1[i] && m1[i + 1]) adjacent++;
        for (int i = 0; i < n; i++) if (m1[i] && m2[i]) both++;
        Assert.InRange(adjacent / (double)(n - 1), q * q - 5 * sigma2, q * q + 5 * sigma2);
        Assert.InRange(both / (double)n, q * q - 5 * sigma2, q * q + 5 * sigma2);
    }
}
