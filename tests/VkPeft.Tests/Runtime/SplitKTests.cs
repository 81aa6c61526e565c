// GPU-vs-CPU tests of split-K skinny products (shaders/splitk_sum.comp after matmul.comp or matmul_tn.comp slices): the
// LoRA shapes x·Aᵀ, dy·B (N = rank) and the MatMulTn weight gradients on awkward sizes, forced and chosen slice counts,
// beta = 0 and accumulation, guard regions around every output, bit-identical reruns, and the slice-count rule.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class SplitKTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    /// <summary>M, K, N, slices (0: chosen), B transposed: K off every multiple of 4, 16 and the slice count; N odd and rank-sized.</summary>
    public static TheoryData<int, int, int, int, bool> MatMulCases() => new()
    {
        { 1, 1001, 16, 3, true },
        { 3, 777, 5, 2, false },
        { 67, 1030, 33, 7, true },
        { 67, 1030, 33, 7, false },
        { 600, 2050, 64, 4, false },
        { 200, 2051, 16, 0, true },     // chosen: 4 row tiles of one skinny column tile fill far less than the target
        { 200, 2051, 16, 0, false },
    };

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void SplitMatMulMatchesCpuAndRepeatsBitForBit(int m, int k, int n, int splits, bool transposeB)
    {
        var a = TestData.Uniform(m * k, m + k);
        var b = TestData.Uniform(n * k, n + k);
        var old = TestData.Uniform(m * n, 77);
        using var ta = Guarded.Create(Ctx, "a", m, k);
        using var tb = Guarded.Create(Ctx, "b", transposeB ? n : k, transposeB ? k : n);
        using var tc = Guarded.Create(Ctx, "c", m, n);
        ta.Upload(a);
        tb.Upload(b);
        var (expected, abs) = CpuReference.MatMul(a, b, m, n, k, transposeB);

        long dispatches = Ctx.Commands.TotalDispatches;
        MatMul.Run(ta.Tensor, tb.Tensor, tc.Tensor, transposeB, algorithm: MatMulAlgorithm.SharedTiles, splitK: splits);
        Assert.True(Ctx.Commands.TotalDispatches - dispatches > 2, "the product should run as slices plus a summing pass");
        var first = tc.Download();
        // Partials of ⌈K/S⌉ products, then S partials added and scaled: fewer roundings per output than one K-long chain.
        MatMulTests.AssertWithinFp32Bound(expected, abs, first, k, $"split-K {m}x{k}x{n}");
        MatMul.Run(ta.Tensor, tb.Tensor, tc.Tensor, transposeB, algorithm: MatMulAlgorithm.SharedTiles, splitK: splits);
        Assert.Equal(first, tc.Download());   // no atomics: the same bits every run

        // Accumulate: C = 0.5·A·op(B) − 2·C_old.
        tc.Upload(old);
        MatMul.Run(ta.Tensor, tb.Tensor, tc.Tensor, transposeB, alpha: 0.5f, beta: -2f, algorithm: MatMulAlgorithm.SharedTiles, splitK: splits);
        var acc = new double[m * n];
        var accAbs = new double[m * n];
        for (int i = 0; i < acc.Length; i++) { acc[i] = 0.5 * expected[i] - 2.0 * old[i]; accAbs[i] = 0.5 * abs[i] + 2 * Math.Abs(old[i]); }
        MatMulTests.AssertWithinFp32Bound(acc, accAbs, tc.Download(), k + 2, $"split-K accumulate {m}x{k}x{n}");
    }

    /// <summary>Summed rows M, C = [N1, N2], slices (0: chosen): LoRA's dA = dTᵀ·X (rank rows) and dB = dYᵀ·T (rank columns).</summary>
    public static TheoryData<int, int, int, int> TnCases() => new()
    {
        { 1000, 16, 67, 3 },
        { 777, 5, 33, 2 },
        { 2050, 64, 9, 5 },
        { 2048, 16, 300, 0 },
        { 2048, 300, 16, 0 },
    };

    [Theory]
    [MemberData(nameof(TnCases))]
    public void SplitMatMulTnMatchesCpuAndRepeatsBitForBit(int m, int n1, int n2, int splits)
    {
        var a = TestData.Uniform(m * n1, m + n1);
        var b = TestData.Uniform(m * n2, m + n2);
        var old = TestData.Uniform(n1 * n2, 5);
        using var ta = Guarded.Create(Ctx, "a", m, n1);
        using var tb = Guarded.Create(Ctx, "b", m, n2);
        using var tc = Guarded.Create(Ctx, "c", n1, n2);
        ta.Upload(a);
        tb.Upload(b);
        tc.Upload(old);
        var aT = new float[n1 * m];
        for (int r = 0; r < m; r++)
            for (int i = 0; i < n1; i++) aT[i * m + r] = a[r * n1 + i];
        var (expected, abs) = CpuReference.MatMul(aT, b, n1, n2, m, transposeB: false);

        long dispatches = Ctx.Commands.TotalDispatches;
        MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor, 0.5f, -2f, MatMulAlgorithm.SharedTiles, splitK: splits);
        Assert.True(Ctx.Commands.TotalDispatches - dispatches > 2, "the product should run as slices plus a summing pass");
        var first = tc.Download();
        var acc = new double[n1 * n2];
        var accAbs = new double[n1 * n2];
        for (int i = 0; i < acc.Length; i++) { acc[i] = 0.5 * expected[i] - 2.0 * old[i]; accAbs[i] = 0.5 * abs[i] + 2 * Math.Abs(old[i]); }
        MatMulTests.AssertWithinFp32Bound(acc, accAbs, first, m + 2, $"split-K Aᵀ·B {m} rows into {n1}x{n2}");
        tc.Upload(old);
        MatMulTn.Run(ta.Tensor, tb.Tensor, tc.Tensor, 0.5f, -2f, MatMulAlgorithm.SharedTiles, splitK: splits);
        Assert.Equal(first, tc.Download());
    }

    [Fact]
    public void SliceCountFillsTheDeviceWithinItsLimits()
    {
        // LoRA x·Aᵀ at 2,048 tokens, rank 16, K = 4096 on 64x16 tiles: 32 workgroups → 16 slices (512 workgroups).
        Assert.Equal(16, SplitK.Choose(32, 4096, 2048 * 16));
        Assert.Equal(3, SplitK.Choose(224, 2048, 14336 * 16));          // dB of an 8B MLP projection: 224 → 672 workgroups
        Assert.Equal(1, SplitK.Choose(512, 4096, 1 << 20));             // the output alone fills the device
        Assert.Equal(1, SplitK.Choose(4, 300, 64));                     // too few products to split
        Assert.Equal(2, SplitK.Choose(1, 4096, SplitK.ScratchFloats / 2));   // the scratch bounds the slices
        Assert.Equal(1, SplitK.Choose(1, 4096, SplitK.ScratchFloats));
    }

    [Fact]
    public void SkinnyTilesHoldRankSizedOutputs()
    {
        Assert.Equal(16u, MatMulTiles.ForSkinny(Ctx.Caps, 16)!.BN);
        Assert.Equal(32u, MatMulTiles.ForSkinny(Ctx.Caps, 17)!.BN);
        Assert.Null(MatMulTiles.ForSkinny(Ctx.Caps, 33));
        Assert.All(MatMulTiles.Skinny, t => Assert.Equal(256u, t.Invocations));
    }

    [Fact]
    public void TheLanesAlgorithmRefusesSlices()
    {
        using var a = Guarded.Create(Ctx, "a", 4, 8);
        using var c = Guarded.Create(Ctx, "c", 4, 4);
        using var b = Guarded.Create(Ctx, "b", 4, 8);
        Assert.Throws<ArgumentException>(() => MatMul.Run(a.Tensor, b.Tensor, c.Tensor, true, algorithm: MatMulAlgorithm.Lanes, splitK: 2));
    }
}
