// GPU-vs-CPU tests of the AdamW step, partial sums of squares (global-norm clipping, also over a table of slices in one
// dispatch) and scale-and-accumulate.
using Xunit.Abstractions;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;

namespace VkPeft.Tests.Ops;

[Collection("gpu")]
public sealed class OptimizerOpsTests(GpuFixture gpu, ITestOutputHelper log)
{
    private VulkanContext Ctx => gpu.Context;

    [Theory]
    [InlineData(1)]
    [InlineData(4099)]
    [InlineData(70001)]
    public void AdamWStepsMatchCpu(int n)
    {
        var s = new AdamWSettings(Lr: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1);
        var p = TestData.Normal(n, n);
        using var tp = Guarded.Create(Ctx, "p", n);
        using var tg = Guarded.Create(Ctx, "g", n);
        using var tm = Guarded.Create(Ctx, "m", n);
        using var tv = Guarded.Create(Ctx, "v", n);
        tp.Upload(p);
        BasicOps.Fill(tm.Tensor, 0);
        BasicOps.Fill(tv.Tensor, 0);
        double[] pd = LayerReference.ToDouble(p), md = new double[n], vd = new double[n];
        for (int step = 1; step <= 4; step++)
        {
            var g = TestData.Normal(n, 100 * step + n, 0.01f * step);
            if (n > 1) g[1] = 0;   // a zero gradient: only decay and momentum move it
            float gradScale = step == 3 ? 0.25f : 1f;
            tg.Upload(g);
            AdamW.Step(tp.Tensor, tg.Tensor, tm.Tensor, tv.Tensor, step, s, gradScale);
            LayerReference.AdamWStep(pd, LayerReference.ToDouble(g), md, vd, step, s.Lr, s.Beta1, s.Beta2, s.Eps, s.WeightDecay, gradScale);
        }
        // Every state value goes through a handful of fp32 roundings per step (scalars rounded to fp32, products,
        // sqrt and division within 3 ulp on Vulkan); errors shrink through β and carry over four steps. m and v are
        // bounded relative to their size (plus that of the latest gradient term); the parameter moves by at most
        // ~lr per step, so its error is bounded by 8 ulp of |p| plus 64 ulp of the total update (4 steps · lr).
        double gMax = 0.04 * 6;
        Within(md, tm.Download(), i => 16 * U * (Math.Abs(md[i]) + 0.1 * gMax) , "adamw m", log);
        Within(vd, tv.Download(), i => 16 * U * Math.Abs(vd[i]) + 1e-45, "adamw v", log);
        Within(pd, tp.Download(), i => 8 * U * Math.Abs(pd[i]) + 64 * U * 4 * s.Lr, "adamw p", log);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4099)]
    public void AdamWWithDeviceClipMatchesCpuAndSkipsNonFiniteRows(int n)
    {
        var s = new AdamWSettings(Lr: 3e-3, WeightDecay: 0.1);
        const float clip = 0.5f;
        var p = TestData.Normal(n, n + 7);
        using var tp = Guarded.Create(Ctx, "p", n);
        using var tg = Guarded.Create(Ctx, "g", n);
        using var tm = Guarded.Create(Ctx, "m", n);
        using var tv = Guarded.Create(Ctx, "v", n);
        // Rows of 3 at offset 2: [Σ grad², loss sum, loss sum] after two values that must not be read.
        using var status = DeviceTensor.Create(Ctx, "status", DType.F32, [8], MemoryCategory.Workspace);
        tp.Upload(p);
        BasicOps.Fill(tm.Tensor, 0);
        BasicOps.Fill(tv.Tensor, 0);
        double[] pd = LayerReference.ToDouble(p), md = new double[n], vd = new double[n];
        // Norms above and below the clip; the ignored values are NaN so a misplaced row would skip the update.
        float[] normsSq = [4f, 0.01f, 9f];
        for (int step = 1; step <= normsSq.Length; step++)
        {
            var g = TestData.Normal(n, 300 * step + n, 0.05f);
            tg.Upload(g);
            status.Upload<float>([float.NaN, float.NaN, normsSq[step - 1], 1.5f, 2.5f, float.NaN, float.NaN, float.NaN]);
            AdamW.StepWithDeviceClip(tp.Tensor, tg.Tensor, tm.Tensor, tv.Tensor, step, s, clip, status, 2, 3);
            double norm = Math.Sqrt(normsSq[step - 1]);
            float scale = norm > clip ? (float)(clip / norm) : 1f;
            LayerReference.AdamWStep(pd, LayerReference.ToDouble(g), md, vd, step, s.Lr, s.Beta1, s.Beta2, s.Eps, s.WeightDecay, scale);
        }
        // As in AdamWStepsMatchCpu, plus the device's fp32 clip / sqrt(Σ) (sqrt and division within 3 ulp each on
        // Vulkan), a relative error of the gradient that m carries and v doubles; 16 ulp covers both.
        double gMax = 0.05 * 6;
        Within(md, tm.Download(), i => 16 * U * (Math.Abs(md[i]) + 0.1 * gMax), "adamw clip m", log);
        Within(vd, tv.Download(), i => 16 * U * Math.Abs(vd[i]) + 1e-45, "adamw clip v", log);
        Within(pd, tp.Download(), i => 8 * U * Math.Abs(pd[i]) + 64 * U * 3 * s.Lr, "adamw clip p", log);

        // A non-finite loss sum or Σ grad² in the row: parameter and moments stay bit for bit as they were.
        foreach (var row in new[] { new[] { 1f, float.NaN, 0f }, new[] { float.PositiveInfinity, 1f, 1f }, new[] { 1f, 0f, float.NegativeInfinity } })
        {
            var (p0, m0, v0) = (tp.Download(), tm.Download(), tv.Download());
            tg.Upload(TestData.Normal(n, n + 11, 0.05f));
            status.Upload<float>([float.NaN, float.NaN, .. row, 0f, 0f, 0f]);
            AdamW.StepWithDeviceClip(tp.Tensor, tg.Tensor, tm.Tensor, tv.Tensor, 4, s, clip, status, 2, 3);
            Assert.Equal(p0, tp.Download());
            Assert.Equal(m0, tm.Download());
            Assert.Equal(v0, tv.Download());
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => AdamW.StepWithDeviceClip(tp.Tensor, tg.Tensor, tm.Tensor, tv.Tensor, 1, s, clip, status, 6, 3));
    }

    [Fact]
    public void AdamWScalarsAreFormedInDouble()
    {
        var (decay, omb1, b2, omb2, eps, neg, bc2) = AdamW.Scalars(3, new AdamWSettings(1e-3, 0.9, 0.999, 1e-8, 0.01));
        Assert.Equal((float)(1 - 1e-5), decay);
        Assert.Equal((float)(1 - 0.9), omb1);
        Assert.Equal(0.999f, b2);
        Assert.Equal((float)(1 - 0.999), omb2);
        Assert.Equal(1e-8f, eps);
        Assert.Equal((float)(-1e-3 / (1 - 0.729)), neg);
        Assert.Equal((float)Math.Sqrt(1 - Math.Pow(0.999, 3)), bc2);
        Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            using var t = Guarded.Create(Ctx, "t", 3);
            AdamW.Step(t.Tensor, t.Tensor, t.Tensor, t.Tensor, 0, new AdamWSettings());
        });
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(70001, 1)]
    [InlineData(70001, 64)]
    [InlineData(100, 257)]   // more partials than elements: the extra ones are zero
    public void SumOfSquaresPartialsAddUpToTheTotal(int n, int k)
    {
        var a = TestData.Uniform(n, n + k);
        var b = TestData.Normal(n / 2 + 1, n);
        using var ta = Guarded.Create(Ctx, "a", n);
        using var tb = Guarded.Create(Ctx, "b", b.Length);
        using var parts = Guarded.Create(Ctx, "partials", k);
        using var total = Guarded.Create(Ctx, "total", 1);
        ta.Upload(a); tb.Upload(b);
        GradOps.SumOfSquares(ta.Tensor, parts.Tensor);
        GradOps.SumOfSquares(tb.Tensor, parts.Tensor, accumulate: true);
        BasicOps.SumAll(parts.Tensor, total.Tensor);
        double expected = LayerReference.SumOfSquares(a) + LayerReference.SumOfSquares(b);
        // All terms positive: lanes add ⌈chunk/256⌉ squares each, an 8-level tree, the accumulation and the final SumAll
        // over k partials (⌈k/256⌉ + 8 levels): relative error ≤ (⌈n/(256k)⌉ + ⌈k/256⌉ + 20)·u.
        double gamma = (Math.Ceiling(n / (256.0 * k)) + Math.Ceiling(k / 256.0) + 20) * U;
        Within([expected], total.Download(), _ => gamma * expected, $"sum of squares n={n} k={k}", log);
        // Overwriting (accumulate false) resets the partials.
        GradOps.SumOfSquares(tb.Tensor, parts.Tensor);
        BasicOps.SumAll(parts.Tensor, total.Tensor);
        double eb = LayerReference.SumOfSquares(b);
        Within([eb], total.Download(), _ => gamma * eb, "sum of squares overwritten", log);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(64, false)]
    [InlineData(100, true)]
    [InlineData(257, true)]   // more partials than most slices have elements
    public void SumOfSquaresOfSlicesMatchesCpuAndPerSliceDispatchesBitForBit(int k, bool accumulate)
    {
        // Slices of awkward sizes (0, 1, not multiples of 64, 256 or k) with gaps between them that hold large values
        // the kernel must not read; the whole flat buffer sits between guard regions.
        (long Offset, long Count)[] slices = [(3, 1), (4, 0), (7, 4099), (4106, 257), (4500, 65), (4565, 1000), (6001, 33)];
        int n = 6100;
        var x = TestData.Normal(n, 7 + k);
        var inSlice = new bool[n];
        foreach (var (o, c) in slices) for (long i = o; i < o + c; i++) inSlice[i] = true;
        for (int i = 0; i < n; i++) if (!inSlice[i]) x[i] = 1e6f;
        using var flat = Guarded.Create(Ctx, "flat", n);
        using var parts = Guarded.Create(Ctx, "partials", k);
        using var reference = Guarded.Create(Ctx, "partials.per_slice", k);
        using var total = Guarded.Create(Ctx, "total", 1);
        using var table = DeviceTensor.Create(Ctx, "table", DType.U32, [slices.Length, 2], MemoryCategory.Workspace);
        table.Upload<uint>(slices.SelectMany(sl => new[] { (uint)sl.Offset, (uint)sl.Count }).ToArray());
        flat.Upload(x);
        var seed = TestData.Uniform(k, 3);
        parts.Upload(seed);
        reference.Upload(seed);

        GradOps.SumOfSquaresOfSlices(flat.Tensor, table, parts.Tensor, accumulate);
        for (int i = 0; i < slices.Length; i++)
            GradOps.SumOfSquares(flat.Tensor.RowsView(slices[i].Offset, slices[i].Count), reference.Tensor, accumulate: accumulate || i > 0);
        // The same fp32 operations in the same order as one dispatch per slice: equal bit for bit.
        Assert.Equal(reference.Download(), parts.Download());

        BasicOps.SumAll(parts.Tensor, total.Tensor);
        double expected = slices.Sum(sl => LayerReference.SumOfSquares(x.AsSpan((int)sl.Offset, (int)sl.Count).ToArray()))
            + (accumulate ? seed.Sum(v => (double)v) : 0);
        // As for SumOfSquares (all terms positive), plus one addition per slice: (⌈n/(256k)⌉ + ⌈k/256⌉ + slices + 20)·u.
        double gamma = (Math.Ceiling(n / (256.0 * k)) + Math.Ceiling(k / 256.0) + slices.Length + 20) * U;
        Within([expected], total.Download(), _ => gamma * expected, $"sum of squares of slices k={k}", log);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4099)]
    [InlineData(70001)]
    public void AxpyAccumulates(int n)
    {
        var x = TestData.Normal(n, n);
        var y = TestData.Normal(n, n + 1);
        using var tx = Guarded.Create(Ctx, "x", n);
        using var ty = Guarded.Create(Ctx, "y", n);
        tx.Upload(x); ty.Upload(y);
        GradOps.Axpy(tx.Tensor, ty.Tensor, -0.375f);
        // One product and one sum (or one fused operation): ≤ 1 ulp of each term.
        var expected = x.Select((v, i) => y[i] - 0.375 * v).ToArray();
        Within(expected, ty.Download(), i => U * (Math.Abs(y[i]) + Math.Abs(0.375 * x[i]) + Math.Abs(expected[i])), "axpy", log);
        var before = ty.Download();
        GradOps.Axpy(ty.Tensor, ty.Tensor, 1f);   // x = y: doubling is exact
        Assert.Equal(before.Select(v => v * 2).ToArray(), ty.Download());
    }
}
