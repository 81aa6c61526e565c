// The layer ops on tensors split over several bindings (lowered device limits): embedding tables, logits chunks, activations.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;

namespace VkPeft.Tests.Ops;

public sealed class SplitLayerOpsTests : SplitDeviceTests
{
    [Fact]
    public void EmbeddingAcrossSplitTableAndOutput()
    {
        const int vocab = 1000, dim = 257, tokens = 300;
        var table = TestData.Normal(vocab * dim, 1);
        var ids = LayerOpsTests.Ids(tokens, vocab, 2, 97);
        using var tt = Make("table", table, vocab, dim);
        using var ti = LayerOpsTests.Ints(Ctx, "ids", ids);
        using var ty = Make("y", new float[tokens * dim], tokens, dim);
        Assert.True(tt.Segments.Count >= 4);
        Embedding.Forward(tt, ti, ty);
        Within(LayerReference.EmbeddingForward(LayerReference.ToDouble(table), vocab, dim, ids), ty.ToArray<float>(), _ => 0, "split embedding forward");

        // Backward: dy split along tokens, dTable split along rows; duplicates straddle the token pieces.
        var dy = TestData.Normal(tokens * dim, 3);
        using var tdy = Make("dy", dy, tokens, dim);
        using var td = Make("dtable", new float[vocab * dim], vocab, dim);
        Embedding.Backward(ti, tdy, td);
        var expected = LayerReference.EmbeddingBackward(ids, LayerReference.ToDouble(dy), vocab, dim);
        Within(expected, td.ToArray<float>(), LayerOpsTests.EmbeddingGradTolerance(ids, dy, null, vocab, dim), "split embedding backward");
    }

    [Fact]
    public void CrossEntropyAcrossSplitLogits()
    {
        const int rows = 13, cols = 4099;   // 16 KiB rows: four per binding
        var z = TestData.Normal(rows * cols, 4, 3);
        var targets = Enumerable.Range(0, rows).Select(r => r % 5 == 1 ? -1 : (r * 977) % cols).ToArray();
        using var tz = Make("logits", z, rows, cols);
        using var tt = LayerOpsTests.Ints(Ctx, "targets", targets);
        using var tl = DeviceTensor.Create(Ctx, "loss", DType.F32, [rows], MemoryCategory.Workspace);
        const float scale = 0.1f;
        CrossEntropy.LossAndGradient(tz, tt, tl, scale);
        var (loss, dz) = LayerReference.CrossEntropy(LayerReference.ToDouble(z), targets, rows, cols, scale);
        // Same bounds as the unsplit test: logits span ±20, so exp's ulp bound is ≤ 43 ulp; 2e-5 absolute covers it.
        Within(loss, tl.ToArray<float>(), _ => 2e-5, "split cross-entropy loss");
        Within(dz, tz.ToArray<float>(), i => scale * (2e-5 * Math.Abs(dz[i] / scale) + 2 * U), "split cross-entropy dlogits");
    }

    [Fact]
    public void RowAndElementwiseOpsAcrossSplits()
    {
        const int rows = 300, dim = 257;
        var x = TestData.Normal(rows * dim, 5);
        var w = TestData.Uniform(dim, 6, 0.5f, 1.5f);
        var xd = LayerReference.ToDouble(x);
        var wd = LayerReference.ToDouble(w);
        using var tx = Make("x", x, rows, dim);
        using var tw = Make("w", w, dim);
        using var ty = Make("y", new float[rows * dim], rows, dim);
        using var tr = DeviceTensor.Create(Ctx, "rstd", DType.F32, [rows], MemoryCategory.Workspace);
        RmsNorm.Forward(tx, tw, ty, 1e-6f, tr);
        var (y, rstd) = LayerReference.RmsNormForward(xd, wd, rows, dim, 1e-6);
        Within(y, ty.ToArray<float>(), i => 20 * U * Math.Abs(y[i]) + 1e-30, "split rmsnorm");
        using var tdw = Make("dw", new float[dim], dim);
        RmsNorm.AccumulateWeightGrad(tx, ty, tr, tdw);   // dy = y here
        var (_, dw) = LayerReference.RmsNormBackward(xd, wd, y, rows, dim, 1e-6);
        Within(dw, tdw.ToArray<float>(), c => 1e-4 * Math.Abs(dw[c]) + 1e-4, "split rmsnorm dw");

        // RoPE in place over rows of 2 heads of 128 (rotate-half); same per-element bound as the unsplit test.
        var q = TestData.Normal(rows * 2 * 128, 7);
        var f = Enumerable.Range(0, 64).Select(i => (float)Math.Pow(10000, -2.0 * i / 128)).ToArray();
        using var tq = Make("q", q, rows, 256);
        using var tf = Make("f", f, 64);
        Rope.Apply(tq, tq, tf, 128, RopePairing.RotateHalf, startPos: 7);
        var qr = LayerReference.Rope(LayerReference.ToDouble(q), LayerReference.ToDouble(f), rows, 256, 128, true, 7);
        Within(qr, tq.ToArray<float>(), _ => 2e-6 * 8, "split rope");   // |x| < 4 here

        using var tu = Make("u", TestData.Normal(rows * dim, 8), rows, dim);
        using var th = Make("h", new float[rows * dim], rows, dim);
        SwiGlu.Forward(tx, tu, th);
        var h = LayerReference.SwiGluForward(xd, LayerReference.ToDouble(tu.ToArray<float>()));
        Within(h, th.ToArray<float>(), i => 40 * U * Math.Abs(h[i]) + 1e-38, "split swiglu");

        // AdamW and sum of squares over split flat tensors.
        using var tm = Make("m", new float[rows * dim], rows * dim);
        using var tv = Make("v", new float[rows * dim], rows * dim);
        using var tp = Make("p", x, rows * dim);
        using var tg = Make("g", TestData.Normal(rows * dim, 9, 0.01f), rows * dim);
        var s = new AdamWSettings(Lr: 1e-3);
        AdamW.Step(tp, tg, tm, tv, 1, s);
        double[] pd = LayerReference.ToDouble(x), md = new double[rows * dim], vd = new double[rows * dim];
        LayerReference.AdamWStep(pd, LayerReference.ToDouble(tg.ToArray<float>()), md, vd, 1, s.Lr, s.Beta1, s.Beta2, s.Eps, s.WeightDecay);
        Within(pd, tp.ToArray<float>(), i => 8 * U * Math.Abs(pd[i]) + 64 * U * s.Lr, "split adamw");
        using var parts = Make("partials", new float[16], 16);
        using var total = DeviceTensor.Create(Ctx, "total", DType.F32, [1], MemoryCategory.Workspace);
        GradOps.SumOfSquares(tx, parts);
        BasicOps.SumAll(parts, total);
        double ss = LayerReference.SumOfSquares(x);
        Within([ss], total.ToArray<float>(), _ => 64 * U * ss, "split sum of squares");
    }
}

/// <summary>The shared-memory reduction fallbacks (subgroup operations off) of the row ops agree with the CPU too.</summary>
public sealed class LayerOpsFallbackTests : IDisposable
{
    private readonly VulkanContext _ctx = new(GpuFixture.Options() with { DisableSubgroupOps = true });

    private VulkanContext Ctx => _ctx;

    public void Dispose() => _ctx.Dispose();

    [Fact]
    public void RmsNormCrossEntropyAndSumOfSquaresWithoutSubgroups()
    {
        Assert.False(Ctx.Caps.SubgroupArithmetic);
        const int rows = 7, dim = 1000;
        var x = TestData.Normal(rows * dim, 1, 3);
        var w = TestData.Uniform(dim, 2, 0.5f, 1.5f);
        var dy = TestData.Normal(rows * dim, 3);
        using var tx = Guarded.Create(Ctx, "x", rows, dim);
        using var tw = Guarded.Create(Ctx, "w", dim);
        using var ty = Guarded.Create(Ctx, "y", rows, dim);
        using var tdy = Guarded.Create(Ctx, "dy", rows, dim);
        tx.Upload(x); tw.Upload(w); tdy.Upload(dy);
        var (xd, wd) = (LayerReference.ToDouble(x), LayerReference.ToDouble(w));
        RmsNorm.Forward(tx.Tensor, tw.Tensor, ty.Tensor, 1e-5f);
        var (y, _) = LayerReference.RmsNormForward(xd, wd, rows, dim, 1e-5);
        Within(y, ty.Download(), i => 20 * U * Math.Abs(y[i]) + 1e-30, "rmsnorm (fallback)");
        RmsNorm.Backward(tx.Tensor, tw.Tensor, tdy.Tensor, ty.Tensor, 1e-5f);
        var (dx, _) = LayerReference.RmsNormBackward(xd, wd, LayerReference.ToDouble(dy), rows, dim, 1e-5);
        double scale = dx.Max(Math.Abs);
        Within(dx, ty.Download(), _ => 40 * U * scale, "rmsnorm dx (fallback)");

        int[] targets = [3, -1, 999, 0, 500, 1, 2];
        using var tt = LayerOpsTests.Ints(Ctx, "targets", targets);
        using var tl = Guarded.Create(Ctx, "loss", rows);
        CrossEntropy.LossAndGradient(tx.Tensor, tt, tl.Tensor, 1f / 6);
        var (loss, dz) = LayerReference.CrossEntropy(xd, targets, rows, dim, 1.0 / 6);
        Within(loss, tl.Download(), _ => 1e-5, "cross-entropy loss (fallback)");
        Within(dz, tx.Download(), i => 1e-5 * Math.Abs(dz[i]) + 1e-8, "cross-entropy dlogits (fallback)");

        using var part = Guarded.Create(Ctx, "part", 3);
        tx.Upload(x);
        GradOps.SumOfSquares(tx.Tensor, part.Tensor);
        double ss = LayerReference.SumOfSquares(x);
        Within([ss], [part.Download().Sum(v => (double)v) is var d ? (float)d : 0], _ => 32 * U * ss, "sum of squares (fallback)");
    }
}
