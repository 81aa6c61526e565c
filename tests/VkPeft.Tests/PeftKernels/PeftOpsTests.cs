// GPU-vs-CPU tests of dropout, QA-LoRA group pooling, activations and bias on awkward sizes with guard regions.
using Xunit.Abstractions;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;
using R = VkPeft.Runtime.Reference.PeftKernelReference;

namespace VkPeft.Tests.PeftKernels;

[Collection("gpu")]
public sealed class PeftOpsTests(GpuFixture gpu, ITestOutputHelper log)
{
    private VulkanContext Ctx => gpu.Context;

    private static double[] D(float[] x) => LayerReference.ToDouble(x);

    /// <summary>Relative error of two successive correct roundings: (1 + u)² − 1.</summary>
    internal const double TwoRoundings = 2 * U + U * U;

    /// <summary>Values of magnitude in [0.5, 1.5) with random signs: never zero, so a zero output marks a dropped element.</summary>
    private static float[] NonZero(int n, int seed)
    {
        var u = TestData.Uniform(n, seed, 0.5f, 1.5f);
        var s = TestData.Uniform(n, seed + 1);
        for (int i = 0; i < n; i++) if (s[i] < 0) u[i] = -u[i];
        return u;
    }

    // ---- dropout ----

    public static TheoryData<int, int, float> DropoutCases => new()
    {
        { 1, 1, 0.5f }, { 3, 67, 0.1f }, { 67, 300, 0.5f }, { 515, 33, 0.9f }, { 515, 257, 0.05f }, { 3, 1, 0.999f },
    };

    [Theory]
    [MemberData(nameof(DropoutCases))]
    public void DropoutMaskMatchesCpuBitForBit(int rows, int cols, float p)
    {
        int n = rows * cols;
        const uint seed = 0xC0FFEE;
        var x = NonZero(n, n);
        using var tx = Guarded.Create(Ctx, "x", rows, cols);
        using var ty = Guarded.Create(Ctx, "y", rows, cols);
        tx.Upload(x);
        Dropout.Apply(tx.Tensor, ty.Tensor, p, seed);
        var y = ty.Download();
        var mask = R.DropoutMask(seed, n, p);
        float scale = Dropout.Scale(p);
        for (int i = 0; i < n; i++)
        {
            Assert.True(mask[i] == (y[i] != 0), $"element {i}: GPU {(y[i] != 0 ? "kept" : "dropped")} it, the CPU mask says {(mask[i] ? "keep" : "drop")}");
            // A kept element is one fp32 product, correctly rounded on every Vulkan device: bit-equal to the host's.
            Assert.True(y[i] == (mask[i] ? x[i] * scale : 0f), $"element {i}: {y[i]} != {x[i]}·{scale}");
        }
        // Against float64 x/(1 − p): scale's rounding and the product's, |err| ≤ ((1 + u)² − 1)·|y| = (2u + u²)·|y|.
        var expected = R.DropoutApply(D(x), p, seed);
        Within(expected, y, i => TwoRoundings * Math.Abs(expected[i]), $"dropout p={p} n={n}", log);

        // Backward: the same call on dy with the same seed zeroes the same elements; in place here (y = x).
        var dy = NonZero(n, n + 5);
        ty.Upload(dy);
        Dropout.Apply(ty.Tensor, ty.Tensor, p, seed);
        var dx = ty.Download();
        for (int i = 0; i < n; i++) Assert.True(dx[i] == (mask[i] ? dy[i] * scale : 0f), $"backward element {i}");
    }

    [Fact]
    public void DropoutKeepsOneMinusPAndSeedsDiffer()
    {
        const int rows = 515, cols = 1021;   // 525 815 elements
        const int n = rows * cols;
        const float p = 0.3f;
        var x = NonZero(n, 9);
        using var tx = Guarded.Create(Ctx, "x", rows, cols);
        using var ty = Guarded.Create(Ctx, "y", rows, cols);
        tx.Upload(x);
        Dropout.Apply(tx.Tensor, ty.Tensor, p, 1);
        var k1 = ty.Download().Select(v => v != 0).ToArray();
        Dropout.Apply(tx.Tensor, ty.Tensor, p, 2);
        var k2 = ty.Download().Select(v => v != 0).ToArray();
        Assert.Equal(R.DropoutMask(1, n, p), k1);
        Assert.Equal(R.DropoutMask(2, n, p), k2);
        // Binomial: σ = √(p(1 − p)/n) ≈ 6.3e-4; 5σ bands. Masks of two seeds overlap like independent ones: (1 − p)².
        double q = 1 - p, sigma = Math.Sqrt(p * q / n), sigma2 = Math.Sqrt(q * q * (1 - q * q) / n);
        double kept = k1.Count(k => k) / (double)n, both = k1.Zip(k2).Count(t => t.First && t.Second) / (double)n;
        log.WriteLine($"dropout p={p}: kept fraction {kept:F5} (expect {q}, σ {sigma:G2}); both seeds {both:F5} (expect {q * q:F5})");
        Assert.InRange(kept, q - 5 * sigma, q + 5 * sigma);
        Assert.InRange(both, q * q - 5 * sigma2, q * q + 5 * sigma2);
    }

    [Fact]
    public void DropoutZeroCopiesAndOneZeroes()
    {
        var x = TestData.Normal(67 * 5, 3);
        x[0] = float.PositiveInfinity; x[1] = 1e-40f;   // p = 0 multiplies by exactly 1
        using var tx = Guarded.Create(Ctx, "x", 67, 5);
        using var ty = Guarded.Create(Ctx, "y", 67, 5);
        tx.Upload(x);
        Dropout.Apply(tx.Tensor, ty.Tensor, 0, 42);
        Assert.Equal(x, ty.Download());
        Dropout.Apply(tx.Tensor, tx.Tensor, 0, 42);
        Assert.Equal(x, tx.Download());
        Dropout.Apply(tx.Tensor, ty.Tensor, 1, 42);
        Assert.All(ty.Download(), v => Assert.Equal(0f, v));
        Assert.Throws<ArgumentOutOfRangeException>(() => Dropout.Apply(tx.Tensor, ty.Tensor, 1.5f, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Dropout.Apply(tx.Tensor, ty.Tensor, float.NaN, 0));
    }

    // ---- group pooling ----

    public static TheoryData<int, int, int> PoolCases => new()
    {
        { 1, 1, 1 }, { 3, 6, 3 }, { 67, 300, 4 }, { 515, 35, 7 }, { 3, 300, 300 }, { 67, 96, 32 }, { 515, 129, 43 },
    };

    [Theory]
    [MemberData(nameof(PoolCases))]
    public void GroupPoolMatchesCpu(int m, int k, int g)
    {
        int l = k / g;
        var x = TestData.Normal(m * k, m + k);
        var dy = TestData.Normal(m * l, m * l + 1);
        var init = TestData.Normal(m * k, 5);
        using var tx = Guarded.Create(Ctx, "x", m, k);
        using var ty = Guarded.Create(Ctx, "y", m, l);
        using var tdx = Guarded.Create(Ctx, "dx", m, k);
        tx.Upload(x);
        GroupPool.Forward(tx.Tensor, ty.Tensor, g);
        // g − 1 sequential additions (γ_{g−1}·Σ|x|), then the product with fp32(1/g) (two roundings): ≤ (g + 1)·u·Σ|x|/g.
        var y = R.GroupPoolForward(D(x), m, k, g);
        var absMean = R.GroupPoolForward(x.Select(v => (double)Math.Abs(v)).ToArray(), m, k, g);
        Within(y, ty.Download(), i => (g + 1) * U * absMean[i] + 1e-30, $"group pool [{m},{k}] g={g}", log);

        // Backward written: fp32(1/g)·dy, two roundings (none for powers of two): (2u + u²)·|dx|.
        tdx.Upload(init);
        ty.Upload(dy);
        GroupPool.Backward(ty.Tensor, tdx.Tensor, g, accumulate: false);
        var dx = R.GroupPoolBackward(D(dy), m, k, g);
        Within(dx, tdx.Download(), i => TwoRoundings * Math.Abs(dx[i]), $"group pool backward [{m},{k}] g={g}", log);
        // Accumulated: one more rounding, of the computed sum (within the first bound of the exact one).
        tdx.Upload(init);
        GroupPool.Backward(ty.Tensor, tdx.Tensor, g, accumulate: true);
        var dxAcc = R.GroupPoolBackward(D(dy), m, k, g, D(init));
        Within(dxAcc, tdx.Download(), i => (1 + U) * TwoRoundings * Math.Abs(dx[i]) + U * Math.Abs(dxAcc[i]), $"group pool backward accumulate [{m},{k}] g={g}", log);
    }

    [Fact]
    public void GroupPoolRejectsRaggedGroups()
    {
        using var tx = Guarded.Create(Ctx, "x", 3, 10);
        using var ty = Guarded.Create(Ctx, "y", 3, 3);
        using var ty2 = Guarded.Create(Ctx, "y2", 3, 4);
        Assert.Contains("not a multiple of the group size 3", Assert.Throws<ArgumentException>(() => GroupPool.Forward(tx.Tensor, ty.Tensor, 3)).Message);
        Assert.Contains("not a multiple", Assert.Throws<ArgumentException>(() => GroupPool.Backward(ty.Tensor, tx.Tensor, 3, false)).Message);
        Assert.Contains("should be [3, 5]", Assert.Throws<ArgumentException>(() => GroupPool.Forward(tx.Tensor, ty2.Tensor, 2)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => GroupPool.Forward(tx.Tensor, ty.Tensor, 0));
    }

    // ---- activations ----

    /// <summary>
    /// Error bounds in units of u = 2⁻²⁴ from Vulkan's SPIR-V precision rules: exp(a) within 3 + 2|a| ulp, 1/x within
    /// 2.5 ulp, +, −, × correctly rounded. The GELU exponent a = 2z is itself formed with ≤ 8 roundings (fp32 constants
    /// included): another 8|a| ulp on exp. σ = 1/(1 + e) inherits e's error scaled by 1 − σ; 1 − σ is e·σ (a ≥ 0, adds
    /// e's and σ's errors) or 1 − σ (a &lt; 0, σ ≤ ½: at most σ's error). f = x·σ; f′ = σ + x·σ·(1 − σ)·(da/dx) bounded
    /// term by term, since the two terms may cancel. A 1e-30 floor covers tails where e overflows fp32 and σ becomes 0.
    /// </summary>
    internal static (double Forward, double Derivative) ActivationBounds(ActivationKind kind, double x)
    {
        if (kind == ActivationKind.Relu) return (0, 0);
        if (kind == ActivationKind.Tanh) return TanhBounds(x);
        bool gelu = kind == ActivationKind.Gelu;
        double a = gelu ? 2 * R.GeluC * (x + R.GeluA * x * x * x) : x;
        double dA = gelu ? 2 * R.GeluC * (1 + 3 * R.GeluA * x * x) : 1;
        double s = R.Sigmoid(a), oms = R.Sigmoid(-a);
        double eExp = 3 + 2 * Math.Abs(a) + (gelu ? 8 * Math.Abs(a) : 0);
        double eS = eExp * oms + 4;
        double eOms = a >= 0 ? eExp + eS + 1 : eS + 1;
        double f = Math.Abs(x * s);
        double t1 = s, t2 = Math.Abs(x * s * oms * dA);
        double forward = (eS + 1) * U * f + 1e-30;
        double derivative = (eS * t1 + (eS + eOms + 3 + (gelu ? 6 : 0)) * t2 + (t1 + t2)) * U + 1e-30;
        return (forward, derivative);
    }

    /// <summary>
    /// tanh as the shader forms it: e = exp(−2|x|) (the doubling exact; exp within 3 + 2·2|x| ulp), t = (1 − e)/(1 + e)
    /// and f′ = 4e/(1 + e)². The numerator carries e's error plus one rounding (absolute: near x = 0, where 1 − e is exact
    /// but small, the error is e's, ~1.5 ulp of 1 — the bound is absolute there, not relative to t), the denominator e's
    /// error over 1 + e plus one rounding, the division 2.5 ulp; f′ adds e's error, twice (1 + e)'s, one product and the
    /// division. Each term bounded separately, plus one ulp of slack.
    /// </summary>
    private static (double Forward, double Derivative) TanhBounds(double x)
    {
        double a = 2 * Math.Abs(x), e = Math.Exp(-a), t = Math.Abs(Math.Tanh(x));
        double eExp = 3 + 2 * a, eQ = eExp * e / (1 + e) + 1;
        double forward = ((eExp * e + (1 - e)) / (1 + e) + t * (eQ + 3.5)) * U + 1e-30;
        double derivative = (eExp + 2 * eQ + 4.5) * U * R.ActivationDerivative(ActivationKind.Tanh, x) + 1e-30;
        return (forward, derivative);
    }

    public static TheoryData<ActivationKind, int, int> ActivationCases()
    {
        var data = new TheoryData<ActivationKind, int, int>();
        foreach (var kind in Enum.GetValues<ActivationKind>())
            foreach (var (m, n) in new[] { (1, 1), (3, 67), (67, 300), (515, 37) }) data.Add(kind, m, n);
        return data;
    }

    [Theory]
    [MemberData(nameof(ActivationCases))]
    public void ActivationMatchesCpu(ActivationKind kind, int m, int n)
    {
        int count = m * n;
        var x = TestData.Normal(count, count + (int)kind, 3);
        float[] specials = [0f, -0f, 1e-30f, -1e-30f, 20f, -20f, 90f, -90f, 1e-3f, -1.2784645f];
        for (int i = 0; i < Math.Min(specials.Length, count); i++) x[i * 7 % count] = specials[i];
        var dy = TestData.Normal(count, count + 11);
        using var tx = Guarded.Create(Ctx, "x", m, n);
        using var ty = Guarded.Create(Ctx, "y", m, n);
        using var tdy = Guarded.Create(Ctx, "dy", m, n);
        using var tdx = Guarded.Create(Ctx, "dx", m, n);
        tx.Upload(x);
        tdy.Upload(dy);
        var (xd, dyd) = (D(x), D(dy));
        var bounds = xd.Select(v => ActivationBounds(kind, v)).ToArray();

        Activation.Forward(kind, tx.Tensor, ty.Tensor);
        var y = R.ActivationForward(kind, xd);
        Within(y, ty.Download(), i => bounds[i].Forward, $"{kind} forward [{m},{n}]", log);

        // dx = dy·f′ adds one product rounding.
        Activation.Backward(kind, tx.Tensor, tdy.Tensor, tdx.Tensor);
        var dx = R.ActivationBackward(kind, xd, dyd);
        double DxTol(int i) => Math.Abs(dyd[i]) * bounds[i].Derivative + U * Math.Abs(dx[i]);
        Within(dx, tdx.Download(), DxTol, $"{kind} backward [{m},{n}]", log);

        // In place: dx over dy, y over x.
        Activation.Backward(kind, tx.Tensor, tdy.Tensor, tdy.Tensor);
        Within(dx, tdy.Download(), DxTol, $"{kind} backward in place", log);
        Activation.Forward(kind, tx.Tensor, tx.Tensor);
        Within(y, tx.Download(), i => bounds[i].Forward, $"{kind} forward in place", log);
    }

    // ---- bias ----

    public static TheoryData<int, int> BiasCases => new() { { 1, 1 }, { 3, 7 }, { 67, 300 }, { 515, 33 }, { 515, 1 }, { 1, 257 } };

    [Theory]
    [MemberData(nameof(BiasCases))]
    public void BiasAddAndGradMatchCpu(int m, int n)
    {
        var y0 = TestData.Normal(m * n, m + n);
        var b = TestData.Normal(n, n);
        var dy = TestData.Normal(m * n, m * n + 3);
        var init = TestData.Normal(n, 99);
        using var ty = Guarded.Create(Ctx, "y", m, n);
        using var tb = Guarded.Create(Ctx, "b", n);
        using var tdy = Guarded.Create(Ctx, "dy", m, n);
        using var tdb = Guarded.Create(Ctx, "db", n);
        ty.Upload(y0); tb.Upload(b); tdy.Upload(dy);

        // One correctly rounded addition per element: |err| ≤ u·|y + b|.
        Bias.Add(ty.Tensor, tb.Tensor);
        var y = R.BiasAdd(D(y0), D(b));
        Within(y, ty.Download(), i => U * Math.Abs(y[i]), $"bias add [{m},{n}]", log);

        // Column sums in row order: m − 1 additions (γ_{m−1}·Σ|dy|); accumulating adds one more term.
        var absSum = R.BiasGrad(dy.Select(v => (double)Math.Abs(v)).ToArray(), n);
        var db = R.BiasGrad(D(dy), n);
        BasicOps.Fill(tdb.Tensor, float.NaN);   // written, not read
        Bias.Grad(tdy.Tensor, tdb.Tensor, accumulate: false);
        var got = tdb.Download();
        Within(db, got, i => (m - 1) * U / (1 - m * U) * absSum[i], $"bias grad [{m},{n}]", log);
        Bias.Grad(tdy.Tensor, tdb.Tensor, accumulate: false);
        Assert.Equal(got, tdb.Download());   // deterministic

        tdb.Upload(init);
        Bias.Grad(tdy.Tensor, tdb.Tensor, accumulate: true);
        var dbAcc = R.BiasGrad(D(dy), n, D(init));
        Within(dbAcc, tdb.Download(), i => m * U / (1 - m * U) * (absSum[i] + Math.Abs(init[i])), $"bias grad accumulate [{m},{n}]", log);
    }

    [Fact]
    public void BiasOverThreeDimensionsAndShapeErrors()
    {
        var y0 = TestData.Normal(2 * 5 * 3, 1);
        float[] b = [1, 2, 3];
        using var ty = Guarded.Create(Ctx, "y", 2, 5, 3);
        using var tb = Guarded.Create(Ctx, "b", 3);
        using var tb4 = Guarded.Create(Ctx, "b4", 4);
        ty.Upload(y0); tb.Upload(b);
        Bias.Add(ty.Tensor, tb.Tensor);
        Assert.Equal(y0.Select((v, i) => v + b[i % 3]).ToArray(), ty.Download());
        Assert.Contains("should end in", Assert.Throws<ArgumentException>(() => Bias.Add(ty.Tensor, tb4.Tensor)).Message);
        Assert.Contains("should end in", Assert.Throws<ArgumentException>(() => Bias.Grad(ty.Tensor, tb4.Tensor, false)).Message);
    }
}
