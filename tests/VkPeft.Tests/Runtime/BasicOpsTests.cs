// GPU-vs-CPU tests of fill, copy, elementwise ops, row reductions and softmax over awkward sizes, with guard regions.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class BasicOpsTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    // Sizes straddle the workgroup (256), the quant block (64) and nested block (256), and vec4 granules.
    public static TheoryData<int> Sizes => new() { 1, 3, 63, 65, 255, 257, 1000, 4099, 70001 };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void FillWritesEveryElementAndNothingElse(int n)
    {
        using var t = Guarded.Create(Ctx, "fill", n);
        BasicOps.Fill(t.Tensor, 2.5f);
        var got = t.Download();
        Assert.All(got, v => Assert.Equal(2.5f, v));
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void CopyMatchesSource(int n)
    {
        var x = TestData.Uniform(n, n);
        using var src = Guarded.Create(Ctx, "src", n);
        using var dst = Guarded.Create(Ctx, "dst", n);
        src.Upload(x);
        BasicOps.Copy(src.Tensor, dst.Tensor);
        Assert.Equal(x, dst.Download()); // a copy is exact
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void ElementwiseOpsMatchCpu(int n)
    {
        var a = TestData.Uniform(n, 1 + n);
        var b = TestData.Uniform(n, 2 + n);
        using var ta = Guarded.Create(Ctx, "a", n);
        using var tb = Guarded.Create(Ctx, "b", n);
        using var tc = Guarded.Create(Ctx, "c", n);
        ta.Upload(a);
        tb.Upload(b);
        // One correctly rounded fp32 operation each: results must be bit-identical to the CPU's.
        BasicOps.Add(ta.Tensor, tb.Tensor, tc.Tensor);
        Assert.Equal(CpuReference.Add(a, b), tc.Download());
        BasicOps.Mul(ta.Tensor, tb.Tensor, tc.Tensor);
        Assert.Equal(CpuReference.Mul(a, b), tc.Download());
        // alpha·a + beta: the GPU may or may not fuse into an FMA, so allow one rounding (2⁻²⁴ relative) of slack.
        BasicOps.Scale(ta.Tensor, tc.Tensor, -1.75f, 0.5f);
        TestData.Close(CpuReference.Scale(a, -1.75f, 0.5f), tc.Download(), 1e-7, 1.2e-7, "scale");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 257)]
    [InlineData(67, 1000)]
    [InlineData(5, 4099)]
    [InlineData(300, 7)]
    public void RowReductionsMatchCpu(int rows, int cols)
    {
        var x = TestData.Uniform(rows * cols, rows * 31 + cols);
        using var tx = Guarded.Create(Ctx, "x", rows, cols);
        using var sum = Guarded.Create(Ctx, "sum", rows);
        using var max = Guarded.Create(Ctx, "max", rows);
        tx.Upload(x);
        BasicOps.SumRows(tx.Tensor, sum.Tensor);
        BasicOps.MaxRows(tx.Tensor, max.Tensor);
        // fp32 pairwise-ish summation of cols terms in [-1,1]: error ≤ cols·2⁻²⁴·Σ|x| ≤ cols²·6e-8; use that bound.
        TestData.Close(CpuReference.SumRows(x, rows, cols), sum.Download(), cols * (double)cols * 6e-8 + 1e-6, 0, "sum rows");
        Assert.Equal(CpuReference.MaxRows(x, rows, cols), max.Download()); // max is exact
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 3)]
    [InlineData(67, 513)]
    [InlineData(4, 4099)]
    public void SoftmaxRowsMatchesCpu(int rows, int cols)
    {
        var x = TestData.Uniform(rows * cols, rows + cols * 7, -20, 20);
        using var tx = Guarded.Create(Ctx, "x", rows, cols);
        using var ty = Guarded.Create(Ctx, "y", rows, cols);
        tx.Upload(x);
        BasicOps.SoftmaxRows(tx.Tensor, ty.Tensor);
        // exp has a few ulp error on GPUs (Vulkan allows 3+2|x| ulp); probabilities ≤ 1, so 1e-6 absolute plus 1e-5 relative.
        TestData.Close(CpuReference.SoftmaxRows(x, rows, cols), ty.Download(), 1e-6, 1e-5, "softmax");
        // In place (output = input) gives the same.
        BasicOps.SoftmaxRows(tx.Tensor, tx.Tensor);
        TestData.Close(CpuReference.SoftmaxRows(x, rows, cols), tx.Download(), 1e-6, 1e-5, "softmax in place");
    }

    [Fact]
    public void SumAndMaxOfWholeTensor()
    {
        var x = TestData.Uniform(100003, 5);
        using var tx = Guarded.Create(Ctx, "x", x.Length);
        using var r = Guarded.Create(Ctx, "r", 1);
        tx.Upload(x);
        BasicOps.SumAll(tx.Tensor, r.Tensor);
        double expected = x.Sum(v => (double)v);
        // 100003 terms in [-1,1] with per-invocation strided partial sums: bound by n·2⁻²⁴·Σ|x| ≈ 0.3; observed far smaller.
        Assert.InRange(r.Download()[0], expected - 0.05, expected + 0.05);
        BasicOps.MaxAll(tx.Tensor, r.Tensor);
        Assert.Equal(x.Max(), r.Download()[0]);
    }
}

/// <summary>The shared-memory fallbacks of the reductions (subgroup operations switched off) agree with the CPU too.</summary>
public sealed class FallbackPathTests : IDisposable
{
    private readonly VulkanContext _ctx = new(GpuFixture.Options() with { DisableSubgroupOps = true });

    public void Dispose() => _ctx.Dispose();

    [Theory]
    [InlineData(3, 257)]
    [InlineData(67, 1000)]
    public void ReductionsAndSoftmaxWithoutSubgroups(int rows, int cols)
    {
        Assert.False(_ctx.Caps.SubgroupArithmetic);
        var x = TestData.Uniform(rows * cols, rows + cols);
        using var tx = Guarded.Create(_ctx, "x", rows, cols);
        using var sum = Guarded.Create(_ctx, "sum", rows);
        using var max = Guarded.Create(_ctx, "max", rows);
        using var sm = Guarded.Create(_ctx, "sm", rows, cols);
        tx.Upload(x);
        BasicOps.SumRows(tx.Tensor, sum.Tensor);
        BasicOps.MaxRows(tx.Tensor, max.Tensor);
        BasicOps.SoftmaxRows(tx.Tensor, sm.Tensor);
        TestData.Close(CpuReference.SumRows(x, rows, cols), sum.Download(), cols * (double)cols * 6e-8 + 1e-6, 0, "sum rows");
        Assert.Equal(CpuReference.MaxRows(x, rows, cols), max.Download());
        TestData.Close(CpuReference.SoftmaxRows(x, rows, cols), sm.Download(), 1e-6, 1e-5, "softmax");
    }
}
