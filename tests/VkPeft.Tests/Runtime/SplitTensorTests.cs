// Tensors larger than one binding or one allocation: lowered limits force split storage, and kernels must still agree
// with the CPU reference across the splits.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
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

    [Theory]
    [InlineData("nf4_dq", MatMulAlgorithm.Lanes)]
    [InlineData("nf4_dq", MatMulAlgorithm.SharedTiles)]
    [InlineData("int4", MatMulAlgorithm.Lanes)]
    public void QuantizedMatMulAcrossSplitActivations(string format, MatMulAlgorithm algorithm)
    {
        // x [203, 96] 78 KB, y [203, 130] 106 KB, dy/dx likewise: every activation spans bindings; the weight fits one.
        const int m = 203, n = 130, k = 96;
        var q = QuantizedKernelTests.Make(format, n, k, 31);
        var deq = q.Dequantize();
        using var w = DeviceQuantizedWeight.Upload(Ctx, "w", q);
        var x = TestData.Uniform(m * k, 32);
        using var tx = Make("x", x, m, k);
        using var ty = DeviceTensor.Create(Ctx, "y", DType.F32, [m, n], MemoryCategory.Workspace);
        Assert.True(tx.Segments.Count > 1 && ty.Segments.Count > 1);
        QuantizedMatMul.Forward(tx, w, ty, algorithm: algorithm, fp16Tiles: false);   // fp32 tiles: the fp32 bound below
        var (expected, abs) = CpuReference.MatMul(x, deq, m, n, k, transposeB: true);
        MatMulTests.AssertWithinFp32Bound(expected, abs, ty.ToArray<float>(), k, $"split {format} forward");

        var dy = TestData.Uniform(m * n, 33);
        using var tdy = Make("dy", dy, m, n);
        using var tdx = DeviceTensor.Create(Ctx, "dx", DType.F32, [m, k], MemoryCategory.Workspace);
        tdx.Upload<float>(x);   // beta = 1 accumulates onto x
        QuantizedMatMul.InputGrad(tdy, w, tdx, beta: 1, algorithm: algorithm, fp16Tiles: false);
        var (g, gAbs) = CpuReference.MatMul(dy, deq, m, k, n, transposeB: false);
        for (int i = 0; i < g.Length; i++) { g[i] += x[i]; gAbs[i] += Math.Abs(x[i]); }
        MatMulTests.AssertWithinFp32Bound(g, gAbs, tdx.ToArray<float>(), n + 1, $"split {format} input gradient");
    }

    [Fact]
    public void RowLargerThanABindingIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => DeviceTensor.Create(Ctx, "wide", DType.F32, [2, 20000], MemoryCategory.Workspace));
        Assert.Contains("wide", e.Message);
        Assert.Equal(0, Ctx.Arena.Accounting.LiveBytes);
    }
}
