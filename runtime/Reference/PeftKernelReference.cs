// Float64 references for the PEFT kernels (Aᵀ·B weight gradients, dropout, QA-LoRA pooling, activations, bias):
// forward and backward, used by the GPU tests and by finite-difference checks of the backward formulas.
using VkPeft.Runtime.Kernels;

namespace VkPeft.Runtime.Reference;

/// <summary>What the PEFT kernels compute, in float64, on row-major double arrays (tests promote the fp32 inputs).</summary>
public static class PeftKernelReference
{
    // ---- matmuls ----

    /// <summary>
    /// C[N1,N2] = alpha·Aᵀ·B + beta·C with A [M,N1], B [M,N2] (C = 0 when <paramref name="c"/> is null), and
    /// AbsSum = |alpha|·Σ_m |A[m,i]·B[m,j]| + |beta·C[i,j]|, the scale of the fp32 rounding error.
    /// </summary>
    public static (double[] C, double[] AbsSum) MatMulTn(double[] a, double[] b, int m, int n1, int n2, double alpha = 1, double beta = 0, double[]? c = null)
    {
        var r = new double[n1 * n2];
        var abs = new double[n1 * n2];
        Parallel.For(0, n1, i =>
        {
            for (int j = 0; j < n2; j++)
            {
                double s = 0, sa = 0;
                for (int k = 0; k < m; k++)
                {
                    double p = a[k * n1 + i] * b[k * n2 + j];
                    s += p;
                    sa += Math.Abs(p);
                }
                double old = c is null ? 0 : c[i * n2 + j];
                r[i * n2 + j] = alpha * s + beta * old;
                abs[i * n2 + j] = Math.Abs(alpha) * sa + Math.Abs(beta * old);
            }
        });
        return (r, abs);
    }

    /// <summary>y[M,N] = x[M,K]·Wᵀ with W [N,K] (nn.Linear); its weight gradient for upstream dy is MatMulTn(dy, x) = dyᵀ·x.</summary>
    public static double[] Linear(double[] x, double[] w, int m, int k, int n)
    {
        var y = new double[m * n];
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int i = 0; i < k; i++) s += x[r * k + i] * w[j * k + i];
                y[r * n + j] = s;
            }
        return y;
    }

    // ---- dropout ----

    /// <summary>PCG hash of one 32-bit word (Jarzynski &amp; Olano, "Hash Functions for GPU Rendering", JCGT 2020).</summary>
    public static uint Pcg(uint v)
    {
        uint state = unchecked(v * 747796405u + 2891336453u);
        uint word = unchecked(((state >> (int)((state >> 28) + 4u)) ^ state) * 277803737u);
        return (word >> 22) ^ word;
    }

    /// <summary>u(seed, i) = (pcg(pcg(i mod 2³²) ^ pcg(seed)) &gt;&gt; 8) / 2²⁴, uniform on the 2²⁴ points k/2²⁴ of [0, 1).</summary>
    public static double DropoutUniform(uint seed, long index) => (Pcg(Pcg(unchecked((uint)index)) ^ Pcg(seed)) >> 8) / 16777216.0;

    /// <summary>The keep mask of elements [0, count): u(seed, i) ≥ p (compared exactly in float64).</summary>
    public static bool[] DropoutMask(uint seed, long count, float p)
    {
        var mask = new bool[count];
        for (long i = 0; i < count; i++) mask[i] = DropoutUniform(seed, i) >= p;
        return mask;
    }

    /// <summary>y = x ⊙ mask/(1 − p) (0 where dropped); also the backward (apply to dy with the same seed).</summary>
    public static double[] DropoutApply(double[] x, float p, uint seed)
    {
        var mask = DropoutMask(seed, x.Length, p);
        double scale = p >= 1 ? 0 : 1 / (1 - (double)p);
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = mask[i] ? x[i] * scale : 0;
        return y;
    }

    // ---- QA-LoRA group pooling ----

    /// <summary>y[m,l] = (1/g)·Σ_{i&lt;g} x[m, l·g+i]; x [M,K], K a multiple of g.</summary>
    public static double[] GroupPoolForward(double[] x, int m, int k, int g)
    {
        int l = k / g;
        var y = new double[m * l];
        for (int r = 0; r < m; r++)
            for (int c = 0; c < l; c++)
            {
                double s = 0;
                for (int i = 0; i < g; i++) s += x[r * k + c * g + i];
                y[r * l + c] = s / g;
            }
        return y;
    }

    /// <summary>dx[m,j] = (1/g)·dy[m, j/g] (+ initial when given).</summary>
    public static double[] GroupPoolBackward(double[] dy, int m, int k, int g, double[]? initial = null)
    {
        int l = k / g;
        var dx = initial is null ? new double[m * k] : (double[])initial.Clone();
        for (int r = 0; r < m; r++)
            for (int j = 0; j < k; j++) dx[r * k + j] += dy[r * l + j / g] / g;
        return dx;
    }

    // ---- activations ----

    public const double GeluC = 0.7978845608028654;   // √(2/π)
    public const double GeluA = 0.044715;

    public static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>
    /// f(x): ReLU max(x,0); SiLU x·σ(x); GELU 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), evaluated as x·σ(2z) (the
    /// identity ½(1 + tanh z) = σ(2z)) so the left tail keeps its relative accuracy instead of cancelling in 1 + tanh.
    /// </summary>
    public static double ActivationValue(ActivationKind kind, double x) => kind switch
    {
        ActivationKind.Relu => Math.Max(x, 0),
        ActivationKind.Silu => x * Sigmoid(x),
        ActivationKind.Gelu => x * Sigmoid(GeluExponent(x)),
        ActivationKind.Tanh => Math.Tanh(x),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>
    /// f′(x): ReLU 1 for x &gt; 0 else 0; SiLU σ·(1 + x·(1 − σ)); GELU ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)
    /// with t = tanh z, evaluated as s + x·s·(1 − s)·2√(2/π)(1 + 3·0.044715x²), s = σ(2z); tanh 1 − tanh² x.
    /// </summary>
    public static double ActivationDerivative(ActivationKind kind, double x)
    {
        switch (kind)
        {
            case ActivationKind.Relu: return x > 0 ? 1 : 0;
            case ActivationKind.Silu:
                return Sigmoid(x) * (1 + x * Sigmoid(-x));
            case ActivationKind.Gelu:
                double a = GeluExponent(x), s = Sigmoid(a);
                return s + x * s * Sigmoid(-a) * 2 * GeluC * (1 + 3 * GeluA * x * x);
            case ActivationKind.Tanh:
                double e = Math.Exp(-2 * Math.Abs(x));
                return 4 * e / ((1 + e) * (1 + e));   // 1 − tanh², without its cancellation near ±1
            default: throw new ArgumentOutOfRangeException(nameof(kind));
        }
    }

    /// <summary>2z = 2·√(2/π)·(x + 0.044715·x³), the argument of σ in GELU's x·σ(2z) form.</summary>
    public static double GeluExponent(double x) => 2 * GeluC * (x + GeluA * x * x * x);

    public static double[] ActivationForward(ActivationKind kind, double[] x) => x.Select(v => ActivationValue(kind, v)).ToArray();

    /// <summary>dx = dy ⊙ f′(x).</summary>
    public static double[] ActivationBackward(ActivationKind kind, double[] x, double[] dy)
    {
        var dx = new double[x.Length];
        for (int i = 0; i < x.Length; i++) dx[i] = dy[i] * ActivationDerivative(kind, x[i]);
        return dx;
    }

    // ---- bias ----

    /// <summary>y[m,n] + bias[n] for y [M,N].</summary>
    public static double[] BiasAdd(double[] y, double[] bias)
    {
        int n = bias.Length;
        var r = new double[y.Length];
        for (int i = 0; i < y.Length; i++) r[i] = y[i] + bias[i % n];
        return r;
    }

    /// <summary>db[n] = Σ_m dy[m,n] (+ initial when given).</summary>
    public static double[] BiasGrad(double[] dy, int n, double[]? initial = null)
    {
        var db = initial is null ? new double[n] : (double[])initial.Clone();
        for (int i = 0; i < dy.Length; i++) db[i % n] += dy[i];
        return db;
    }
}
