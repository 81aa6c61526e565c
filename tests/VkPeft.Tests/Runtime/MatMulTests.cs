// GPU-vs-CPU tests of both fp32 matmul algorithms (shared-memory tiles, subgroup lanes): both B layouts, awkward
// shapes, alpha/beta, guard regions.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class MatMulTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    public static TheoryData<int, int, int, bool, MatMulAlgorithm> Cases()
    {
        var data = new TheoryData<int, int, int, bool, MatMulAlgorithm>();
        (int, int, int, bool)[] shapes =
        [
            (1, 1, 1, false), (1, 1, 1, true), (3, 5, 7, false), (3, 5, 7, true), (1, 200, 129, true), (1, 64, 256, true),
            (67, 65, 129, false), (67, 65, 129, true), (130, 33, 257, true), (65, 172, 64, false), (17, 40, 68, true),
        ];
        foreach (var (m, n, k, t) in shapes)
        {
            data.Add(m, n, k, t, MatMulAlgorithm.SharedTiles);
            data.Add(m, n, k, t, MatMulAlgorithm.Lanes);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesCpuReference(int m, int n, int k, bool transposeB, MatMulAlgorithm algorithm)
    {
        if (algorithm == MatMulAlgorithm.Lanes) Assert.True(MatMul.LanesSupported(Ctx), "lavapipe runs 8-lane subgroups with broadcast");
        Check(m, n, k, transposeB, algorithm);
    }

    private void Check(int m, int n, int k, bool transposeB, MatMulAlgorithm algorithm)
    {
        var a = TestData.Uniform(m * k, m * 1000 + k);
        var b = TestData.Uniform(n * k, n * 1000 + k + 1);
        using var ta = Guarded.Create(Ctx, "a", m, k);
        using var tb = transposeB ? Guarded.Create(Ctx, "b", n, k) : Guarded.Create(Ctx, "b", k, n);
        using var tc = Guarded.Create(Ctx, "c", m, n);
        ta.Upload(a);
        tb.Upload(b);
        MatMul.Run(ta.Tensor, tb.Tensor, tc.Tensor, transposeB, algorithm: algorithm);
        var (expected, absSum) = CpuReference.MatMul(a, b, m, n, k, transposeB);
        AssertWithinFp32Bound(expected, absSum, tc.Download(), k, "C = A·op(B)");

        // Accumulate: C = 0.5·A·op(B) − 2·C_old.
        var old = TestData.Uniform(m * n, 77);
        tc.Upload(old);
        MatMul.Run(ta.Tensor, tb.Tensor, tc.Tensor, transposeB, alpha: 0.5f, beta: -2f, algorithm: algorithm);
        var acc = new double[m * n];
        var accAbs = new double[m * n];
        for (int i = 0; i < acc.Length; i++) { acc[i] = 0.5 * expected[i] - 2.0 * old[i]; accAbs[i] = 0.5 * absSum[i] + 2 * Math.Abs(old[i]); }
        AssertWithinFp32Bound(acc, accAbs, tc.Download(), k + 2, "C = αA·op(B) + βC");
    }

    /// <summary>
    /// Recursive fp32 summation of K products (with or without FMA) errs by at most γ_K·Σ|a·b| with γ_K = K·u/(1−K·u),
    /// u = 2⁻²⁴ (Higham, Accuracy and Stability, §3.1). The bound is what we assert: it is tight enough to catch any
    /// wrong index (those produce errors of order |C|) and loose enough to hold for every summation order.
    /// </summary>
    /// <param name="operandRounding">relative rounding of one operand before the products (2⁻¹¹ for B tiles stored in
    /// fp16, values in fp16's normal range): each product then errs by that fraction more, so the bound grows by
    /// operandRounding·(1 + γ_K)·Σ|a·b|.</param>
    internal static void AssertWithinFp32Bound(double[] expected, double[] absSum, float[] actual, int k, string what, double operandRounding = 0)
    {
        const double u = 1.0 / (1 << 24);
        double gamma = (k + 1) * u / (1 - (k + 1) * u);
        for (int i = 0; i < expected.Length; i++)
        {
            double tol = (gamma + operandRounding * (1 + gamma)) * absSum[i] + 1e-30;
            double err = Math.Abs(actual[i] - expected[i]);
            Assert.True(err <= tol, $"{what}: element {i} = {actual[i]}, expected {expected[i]}, |err| {err:G3} > bound {tol:G3}");
        }
    }
}
