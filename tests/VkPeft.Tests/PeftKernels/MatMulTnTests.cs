// GPU-vs-CPU tests of C = alpha·Aᵀ·B + beta·C (both shaders) on awkward shapes with guard regions, chunked long sums,
// beta = 0 never reading C, determinism and argument errors.
using Xunit.Abstractions;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;

namespace VkPeft.Tests.PeftKernels;

[Collection("gpu")]
public sealed class MatMulTnTests(GpuFixture gpu, ITestOutputHelper log)
{
    private VulkanContext Ctx => gpu.Context;

    public static TheoryData<int, int, int, MatMulAlgorithm> Cases()
    {
        var data = new TheoryData<int, int, int, MatMulAlgorithm>();
        (int M, int N1, int N2)[] shapes =
        [
            (1, 1, 1), (3, 5, 7), (1, 300, 3), (67, 300, 5), (67, 7, 300), (515, 65, 129), (515, 300, 17), (3, 129, 1), (515, 1, 300),
        ];
        foreach (var (m, n1, n2) in shapes)
        {
            data.Add(m, n1, n2, MatMulAlgorithm.SharedTiles);
            data.Add(m, n1, n2, MatMulAlgorithm.Lanes);
        }
        data.Add(20000, 5, 70, MatMulAlgorithm.SharedTiles);   // three chunks of ChunkRows rows
        data.Add(20000, 70, 5, MatMulAlgorithm.Lanes);
        return data;
    }

    /// <summary>
    /// Each output is an fp32 fma chain over ≤ ChunkRows rows, then alpha·acc (+ beta·C: a product and a sum), and each
    /// further chunk adds alpha·acc to C (a product and a sum): at most M + 3·chunks roundings, so |err| ≤ γ_n·AbsSum with
    /// n = M + 3·chunks, γ_n = n·u/(1 − n·u) and AbsSum = |alpha|·Σ|a·b| + |beta·C| (Higham, §3.1).
    /// </summary>
    private static Func<int, double> Bound(double[] absSum, int m)
    {
        int n = m + 3 * ((m + MatMulTn.ChunkRows - 1) / MatMulTn.ChunkRows);
        double gamma = n * U / (1 - n * U);
        return i => gamma * absSum[i] + 1e-30;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesCpuReference(int m, int n1, int n2, MatMulAlgorithm algorithm)
    {
        if (algorithm == MatMulAlgorithm.Lanes) Assert.True(MatMul.LanesSupported(Ctx), "lavapipe runs 8-lane subgroups with broadcast");
        var a = TestData.Uniform(m * n1, m * 31 + n1);
        var b = TestData.Uniform(m * n2, m * 37 + n2 + 1);
        using var ta = Guarded.Create(Ctx, "a", m, n1);
        using var tb = Guarded.Create(Ctx, "b", m, n2);
        using var tc = Guarded.Create(Ctx, "c", n1, n2);
        ta.Upload(a);
        tb.Upload(b);
        var (ad, bd) = (LayerReference.ToDouble(a), LayerReference.ToDouble(b));

        // beta = 0 must not read C: NaN there may not leak into the result.
        BasicOps.Fill(tc.Tensor, float.NaN);
        MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor, 1, 0, algorithm);
        var (expected, absSum) = PeftKernelReference.MatMulTn(ad, bd, m, n1, n2);
        var first = tc.Download();
        Within(expected, first, Bound(absSum, m), $"Aᵀ·B {algorithm} M={m} [{n1},{n2}]", log);

        // Same inputs, same bits.
        MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor, 1, 0, algorithm);
        Assert.Equal(first, tc.Download());

        // Accumulate: C = 0.5·Aᵀ·B − 2·C_old.
        var old = TestData.Uniform(n1 * n2, 77);
        tc.Upload(old);
        MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor, 0.5f, -2f, algorithm);
        var (acc, accAbs) = PeftKernelReference.MatMulTn(ad, bd, m, n1, n2, 0.5, -2, LayerReference.ToDouble(old));
        Within(acc, tc.Download(), Bound(accAbs, m), $"0.5·Aᵀ·B − 2·C {algorithm} M={m} [{n1},{n2}]", log);
    }

    [Fact]
    public void LoraWeightGradientsWithTheDefaultAlgorithm()
    {
        // dB = s·dYᵀ·T ([out, r]) and dA = s·dTᵀ·X ([r, in]) for 515 tokens, rank 8, in 300, out 259.
        const int m = 515, r = 8, din = 300, dout = 259;
        const float s = 2f;
        var dy = TestData.Normal(m * dout, 1);
        var t = TestData.Normal(m * r, 2);
        var dt = TestData.Normal(m * r, 3);
        var x = TestData.Normal(m * din, 4);
        using var tdy = Guarded.Create(Ctx, "dy", m, dout);
        using var tt = Guarded.Create(Ctx, "t", m, r);
        using var tdt = Guarded.Create(Ctx, "dt", m, r);
        using var tx = Guarded.Create(Ctx, "x", m, din);
        using var tdB = Guarded.Create(Ctx, "dB", dout, r);
        using var tdA = Guarded.Create(Ctx, "dA", r, din);
        tdy.Upload(dy); tt.Upload(t); tdt.Upload(dt); tx.Upload(x);
        MatMulTn.Run(tdy.Tensor, tt.Tensor, tdB.Tensor, s);
        MatMulTn.Run(tdt.Tensor, tx.Tensor, tdA.Tensor, s);
        var (dB, dBAbs) = PeftKernelReference.MatMulTn(LayerReference.ToDouble(dy), LayerReference.ToDouble(t), m, dout, r, s);
        var (dA, dAAbs) = PeftKernelReference.MatMulTn(LayerReference.ToDouble(dt), LayerReference.ToDouble(x), m, r, din, s);
        Within(dB, tdB.Download(), Bound(dBAbs, m), "dB = s·dYᵀ·T", log);
        Within(dA, tdA.Download(), Bound(dAAbs, m), "dA = s·dTᵀ·X", log);
    }

    [Fact]
    public void EmptySumScalesC()
    {
        using var ta = DeviceTensor.Create(Ctx, "a", DType.F32, [0, 3], MemoryCategory.Workspace);
        using var tb = DeviceTensor.Create(Ctx, "b", DType.F32, [0, 2], MemoryCategory.Workspace);
        using var tc = Guarded.Create(Ctx, "c", 3, 2);
        float[] old = [1, -2, 3, -4, 5, -6];
        tc.Upload(old);
        MatMulTn.Run(ta, tb, tc.Tensor, 1, 0.5f);
        Assert.Equal(old.Select(v => v * 0.5f).ToArray(), tc.Download());
        MatMulTn.Run(ta, tb, tc.Tensor);
        Assert.Equal(new float[6], tc.Download());
    }

    [Fact]
    public void RejectsMismatchedShapes()
    {
        using var ta = Guarded.Create(Ctx, "a", 4, 3);
        using var tb = Guarded.Create(Ctx, "b", 5, 2);
        using var tb4 = Guarded.Create(Ctx, "b4", 4, 2);
        using var tc = Guarded.Create(Ctx, "c", 2, 3);
        Assert.Contains("summed rows", Assert.Throws<ArgumentException>(() => MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor)).Message);
        Assert.Contains("should be [3, 2]", Assert.Throws<ArgumentException>(() => MatMulTn.Run(ta.Tensor, tb4.Tensor, tc.Tensor)).Message);
    }
}
