// Tensors larger than one binding or one allocation: lowered limits force split storage, and kernels must still agree
// with the CPU reference across the splits.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

public sealed class SplitTensorTests : SplitDeviceTests
{
    [Fact]
    public void LargeTensorIsSplitAndRoundTrips()
    {
        var x = TestData.Uniform(300 * 257, 1);
        using var t = Make("x", x, 300, 257);
        Assert.True(t.Segments.Count >= 5, $"expected several segments, got {t.Segments.Count}");
        Assert.All(t.Segments, s => Assert.True(s.Range.Size <= 64 << 10));
        Assert.Equal(x, t.ToArray<float>());
        Assert.Throws<InvalidOperationException>(() => t.Range);
    }

    [Fact]
    public void ElementwiseAndReductionsAcrossSplits()
    {
        var a = TestData.Uniform(300 * 257, 2);
        var b = TestData.Uniform(300 * 257, 3);
        using var ta = Make("a", a, 300, 257);
        using var tb = Make("b", b, 300 * 257);          // different shape, different cut points
        using var tc = DeviceTensor.Create(Ctx, "c", DType.F32, [300, 257], MemoryCategory.Workspace);
        BasicOps.Add(ta, tb, tc);
        Assert.Equal(CpuReference.Add(a, b), tc.ToArray<float>());

        using var sums = DeviceTensor.Create(Ctx, "sums", DType.F32, [300], MemoryCategory.Workspace);
        BasicOps.SumRows(ta, sums);
        TestData.Close(CpuReference.SumRows(a, 300, 257), sums.ToArray<float>(), 257 * 257 * 6e-8, 0, "split sum rows");

        using var total = DeviceTensor.Create(Ctx, "total", DType.F32, [1], MemoryCategory.Workspace);
        BasicOps.MaxAll(ta, total);
        Assert.Equal(a.Max(), total.ToArray<float>()[0]);

        using var sm = DeviceTensor.Create(Ctx, "sm", DType.F32, [300, 257], MemoryCategory.Workspace);
        BasicOps.SoftmaxRows(ta, sm);
        TestData.Close(CpuReference.SoftmaxRows(a, 300, 257), sm.ToArray<float>(), 1e-6, 1e-5, "split softmax");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void MatMulAcrossSplitOperands(bool transposeB)
    {
        const int m = 150, n = 130, k = 129;  // A 77 KB, B 67 KB, C 78 KB: each over one 64 KiB binding
        var a = TestData.Uniform(m * k, 4);
        var b = TestData.Uniform(n * k, 5);
        using var ta = Make("a", a, m, k);
        using var tb = transposeB ? Make("b", b, n, k) : Make("b", b, k, n);
        using var tc = DeviceTensor.Create(Ctx, "c", DType.F32, [m, n], MemoryCategory.Workspace);
        Assert.True(ta.Segments.Count > 1 && tb.Segments.Count > 1 && tc.Segments.Count > 1);
        MatMul.Run(ta, tb, tc, transposeB);
        var (expected, abs) = CpuReference.MatMul(a, b, m, n, k, transposeB);
        MatMulTests.AssertWithinFp32Bound(expected, abs, tc.ToArray<float>(), k, "split matmul");
    }

    [Fact]
    public void RowLargerThanABindingIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => DeviceTensor.Create(Ctx, "wide", DType.F32, [2, 20000], MemoryCategory.Workspace));
        Assert.Contains("wide", e.Message);
        Assert.Equal(0, Ctx.Arena.Accounting.LiveBytes);
    }
}
