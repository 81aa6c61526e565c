// GPU-vs-CPU tests of DoRA's kernels (shaders/dora.comp): per-row squared norms decoded from every quantized format and
// from fp32, the rank-sized row-norm update against its float64 reference, and column scaling — on awkward sizes (off
// the workgroup, block 64, nested block 256 and row-workgroup sizes) with guard regions around every output.
using Xunit.Abstractions;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Runtime;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;

namespace VkPeft.Tests.PeftKernels;

[Collection("gpu")]
public sealed class DoraKernelTests(GpuFixture gpu, ITestOutputHelper log)
{
    private VulkanContext Ctx => gpu.Context;

    private static double[] D(float[] x) => LayerReference.ToDouble(x);

    /// <summary>γ_n = n·u / (1 − n·u): the bound on n successive roundings.</summary>
    private static double Gamma(int n) => n * U / (1 - n * U);

    public static TheoryData<string, int, int> RowNormCases()
    {
        var d = new TheoryData<string, int, int>();
        foreach (var f in QuantizedKernelTests.Formats)
        {
            bool gguf = f.StartsWith('q');
            d.Add(f, 7, gguf ? 96 : 172);     // rows shorter than one row workgroup's stride twice over
            d.Add(f, 300, gguf ? 288 : 65);    // 300 rows: off the 256 workgroup; 65 columns: off the block of 64
        }
        return d;
    }

    // Σ of k squares (each rounded once) summed in any order: |err| ≤ γ_{k}·Σ w² (all terms non-negative). The square
    // root adds one rounding and halves the relative error of its argument.
    [Theory]
    [MemberData(nameof(RowNormCases))]
    public void RowSquaredNormsOfQuantizedWeightsMatchCpu(string format, int n, int k)
    {
        var q = QuantizedKernelTests.Make(format, n, k, n * 7 + k);
        using var w = DeviceQuantizedWeight.Upload(Ctx, "w", q);
        var expected = DoraReference.RowSquaredNorms(D(q.Dequantize()), n, k);
        using var o = Guarded.Create(Ctx, "w2", n);
        DoraOps.RowSquaredNorms(w, o.Tensor);
        Within(expected, o.Download(), i => Gamma(k + 1) * expected[i], $"row ‖W‖² {format} [{n},{k}]", log);
        DoraOps.RowSquaredNorms(w, o.Tensor, sqrt: true);
        var norms = expected.Select(Math.Sqrt).ToArray();
        Within(norms, o.Download(), i => (Gamma(k + 1) / 2 + U) * norms[i] * 1.0001, $"row ‖W‖ {format} [{n},{k}]", log);
    }

    [Theory]
    [InlineData(515, 33)]
    [InlineData(3, 300)]
    [InlineData(1, 1)]
    public void RowSquaredNormsOfDenseWeightsMatchCpu(int n, int k)
    {
        var wv = TestData.Normal(n * k, n + k);
        using var w = Guarded.Create(Ctx, "w", n, k);
        w.Upload(wv);
        using var o = Guarded.Create(Ctx, "w2", n);
        DoraOps.RowSquaredNorms(w.Tensor, o.Tensor);
        var expected = DoraReference.RowSquaredNorms(D(wv), n, k);
        Within(expected, o.Download(), i => Gamma(k + 1) * expected[i], $"dense row ‖W‖² [{n},{k}]", log);
        Assert.Equal(wv, w.Download());   // read only
    }

    // The cheap identity in float64 equals the norm of the materialized W0 + s·B·A (to float64 rounding), which is what
    // makes the device's rank-sized update exact up to fp32 rounding.
    [Theory]
    [InlineData(300, 65, 3, 2.0)]
    [InlineData(1, 257, 8, 0.5)]
    [InlineData(67, 33, 1, 4.0)]
    public void RankSizedNormMatchesCpuAndTheMaterializedNorm(int outF, int inF, int rank, double s)
    {
        var w0 = D(TestData.Normal(outF * inF, outF, 0.05f));
        var a = TestData.Normal(rank * inF, inF, 0.2f);
        var b = TestData.Normal(outF * rank, rank, 0.05f);
        var m = TestData.Uniform(outF, 5, 0.5f, 1.5f);
        var w2 = DoraReference.RowSquaredNorms(w0, outF, inF);
        var ct = DoraReference.ATimesW0T(w0, D(a), outF, inF, rank);
        var bg = DoraReference.BTimesGram(D(b), D(a), outF, inF, rank);
        // fp32 inputs, as the device receives them; the reference then works on exactly those values.
        float[] F(double[] x) => [.. x.Select(v => (float)v)];
        var (w2f, ctf, bgf) = (F(w2), F(ct), F(bg));
        var (nRef, scaleRef, invRef, absTerms) = DoraReference.NormScale(D(w2f), D(b), D(ctf), D(bgf), D(m), (float)s, outF, rank);
        var materialized = DoraReference.MaterializedRowNorms(w0, D(b), D(a), s, outF, inF, rank);
        var (exactN, _, _, _) = DoraReference.NormScale(w2, D(b), ct, bg, D(m), s, outF, rank);
        for (int j = 0; j < outF; j++)
            Assert.True(Math.Abs(exactN[j] - materialized[j]) <= 1e-12 * materialized[j], $"row {j}: identity {exactN[j]} vs materialized {materialized[j]}");

        using var tw2 = Guarded.Create(Ctx, "w2", outF);
        using var tb = Guarded.Create(Ctx, "b", outF, rank);
        using var tct = Guarded.Create(Ctx, "ct", rank, outF);
        using var tbg = Guarded.Create(Ctx, "bg", outF, rank);
        using var tm = Guarded.Create(Ctx, "m", outF);
        using var tscale = Guarded.Create(Ctx, "scale", outF);
        using var tinv = Guarded.Create(Ctx, "inv_n", outF);
        tw2.Upload(w2f); tb.Upload(b); tct.Upload(ctf); tbg.Upload(bgf); tm.Upload(m);
        DoraOps.NormScale(tw2.Tensor, tb.Tensor, tct.Tensor, tbg.Tensor, tm.Tensor, (float)s, tscale.Tensor, tinv.Tensor);
        // n² = w2 + Σ_k B·(2s·Ct + s²·BG): r + 3 roundings per term, so |err(n²)| ≤ γ_{r+4}·Σ|terms|; n, 1/n and m/n then
        // carry half that relative to n² plus the square root's, the division's and the fp32 s·s's roundings.
        double Rel(int j) => Gamma(rank + 4) * absTerms[j] / (2 * nRef[j] * nRef[j]) + 4 * U;
        Within(invRef, tinv.Download(), j => Rel(j) * invRef[j], $"DoRA 1/n [{outF},{rank}]", log);
        Within(scaleRef, tscale.Download(), j => Rel(j) * Math.Abs(scaleRef[j]), $"DoRA m/n [{outF},{rank}]", log);
    }

    // y = x·v is one correctly rounded product per element: bit-equal to the float64 product rounded to float32.
    [Theory]
    [InlineData(515, 33)]
    [InlineData(1, 257)]
    [InlineData(67, 300)]
    public void ScaleColumnsIsExactAndWorksInPlace(int rows, int cols)
    {
        var x = TestData.Normal(rows * cols, rows + cols);
        var v = TestData.Normal(cols, cols);
        using var tx = Guarded.Create(Ctx, "x", rows, cols);
        using var tv = Guarded.Create(Ctx, "v", cols);
        using var ty = Guarded.Create(Ctx, "y", rows, cols);
        tx.Upload(x); tv.Upload(v);
        DoraOps.ScaleColumns(tx.Tensor, tv.Tensor, ty.Tensor);
        var expected = DoraReference.ScaleColumns(D(x), D(v)).Select(e => (float)e).ToArray();
        Assert.Equal(expected, ty.Download());
        DoraOps.ScaleColumns(tx.Tensor, tv.Tensor, tx.Tensor);
        Assert.Equal(expected, tx.Download());
    }

    [Fact]
    public void ShapeErrorsNameTheOperands()
    {
        using var x = Guarded.Create(Ctx, "x", 4, 5);
        using var v = Guarded.Create(Ctx, "v", 4);
        Assert.Contains("should end in", Assert.Throws<ArgumentException>(() => DoraOps.ScaleColumns(x.Tensor, v.Tensor, x.Tensor)).Message);
        using var o = Guarded.Create(Ctx, "o", 3);
        Assert.Contains("row norms", Assert.Throws<ArgumentException>(() => DoraOps.RowSquaredNorms(x.Tensor, o.Tensor)).Message);
    }
}
