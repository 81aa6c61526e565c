// GPU-vs-CPU tests of causal grouped-query attention (forward and backward, every shader algorithm) on awkward shapes,
// GQA ratios 1/2/4, batches, generation mode with a KV cache, guard regions; plus a rough timing print.
using System.Diagnostics;
using Xunit.Abstractions;
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Attention;

[Collection("gpu")]
public sealed class AttentionTests(GpuFixture gpu, ITestOutputHelper output)
{
    private VulkanContext Ctx => gpu.Context;

    /// <summary>The algorithms Auto picks on some device kind (direct: CPU devices; flash: GPUs).</summary>
    private static readonly AttentionAlgorithm[] Chosen = [AttentionAlgorithm.Direct, AttentionAlgorithm.Flash];

    public static TheoryData<int, int, int, int, int, int, int, AttentionAlgorithm> Cases() => Combine(ShortShapes, Chosen);

    /// <summary>The shared-memory one-row-per-invocation kernels, which no device kind picks by default.</summary>
    public static TheoryData<int, int, int, int, int, int, int, AttentionAlgorithm> SharedCases() => Combine(ShortShapes, [AttentionAlgorithm.Shared]);

    private static readonly (int, int, int, int, int, int, int)[] ShortShapes =
    [
        // batch, seqLen, startPos, nHeads, nKvHeads, headDim, extra kv rows per sequence
        (1, 1, 0, 4, 4, 8, 0), (1, 3, 0, 4, 2, 16, 0), (3, 17, 0, 4, 1, 64, 0), (1, 67, 0, 4, 2, 16, 0),
        (1, 130, 0, 2, 1, 64, 0), (3, 9, 0, 2, 2, 8, 0),
        (3, 1, 20, 8, 2, 16, 5), (1, 3, 37, 4, 4, 64, 0), (2, 3, 5, 4, 1, 8, 4),
        (1, 5, 0, 2, 1, 48, 0), (2, 11, 0, 2, 2, 32, 0), (1, 9, 2, 2, 1, 128, 0), (1, 6, 0, 1, 1, 3, 0), (1, 7, 0, 2, 2, 96, 0),
        (2, 67, 13, 8, 2, 128, 0), (2, 3, 30, 4, 2, 48, 2),
    ];

    /// <summary>Long sequences after a cached prefix (several seconds each for the float64 reference on a CPU).</summary>
    public static TheoryData<int, int, int, int, int, int, int, AttentionAlgorithm> LongCases() => Combine(
        [(1, 600, 40, 4, 1, 64, 3), (2, 600, 7, 4, 2, 48, 0)], [AttentionAlgorithm.Direct, AttentionAlgorithm.Shared, AttentionAlgorithm.Flash]);

    private static TheoryData<int, int, int, int, int, int, int, AttentionAlgorithm> Combine((int, int, int, int, int, int, int)[] shapes, AttentionAlgorithm[] algorithms)
    {
        var data = new TheoryData<int, int, int, int, int, int, int, AttentionAlgorithm>();
        foreach (var (b, t, p, h, kv, hd, extra) in shapes)
            foreach (var algorithm in algorithms)
                data.Add(b, t, p, h, kv, hd, extra, algorithm);
        return data;
    }

    [Theory]
    [MemberData(nameof(SharedCases))]
    [Trait("Category", "Exhaustive")]
    public void SharedKernelsMatchCpuReference(int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim, int extra, AttentionAlgorithm algorithm) =>
        MatchesCpuReference(batch, seqLen, startPos, nHeads, nKvHeads, headDim, extra, algorithm);

    [Theory]
    [MemberData(nameof(LongCases))]
    [Trait("Category", "Exhaustive")]
    public void LongSequencesMatchCpuReference(int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim, int extra, AttentionAlgorithm algorithm) =>
        MatchesCpuReference(batch, seqLen, startPos, nHeads, nKvHeads, headDim, extra, algorithm);

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesCpuReference(int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim, int extra, AttentionAlgorithm algorithm)
    {
        var s = new AttentionShape(batch, seqLen, startPos, nHeads, nKvHeads, headDim, startPos + seqLen + extra);
        int seed = batch * 1000 + seqLen * 10 + headDim;
        var (q, k, v, dO) = Inputs(s, seed);
        var r = Run(s, q, k, v, dO, algorithm, out _, out _);
        Compare(s, q, k, v, dO, r);
    }

    /// <summary>
    /// Work split over chained dispatches (as lavapipe's loop limit needs for long sequences): forward and dq by key
    /// ranges (log-sum-exp merge, dq sums), dk/dv by query head and query rows; the first dispatch writes, the rest combine.
    /// </summary>
    [Theory]
    [InlineData(5, 7, AttentionAlgorithm.Direct)]
    [InlineData(5, 7, AttentionAlgorithm.Shared)]
    [InlineData(16, 40, AttentionAlgorithm.Direct)]
    [InlineData(5, 7, AttentionAlgorithm.Flash)]
    [InlineData(16, 40, AttentionAlgorithm.Flash)]
    public void ChainedDispatchesMatchCpuReference(int keysPerDispatch, int pairsPerDispatch, AttentionAlgorithm algorithm)
    {
        var s = new AttentionShape(2, 17, 2, 8, 2, 16, 21);
        var (q, k, v, dO) = Inputs(s, 31);
        var r = Run(s, q, k, v, dO, algorithm, out _, out _, keysPerDispatch, pairsPerDispatch);
        Compare(s, q, k, v, dO, r);
    }

    /// <summary>
    /// Watchdog-safe splitting: with a per-dispatch time target far below any kernel's time every attention kernel runs
    /// one key (or query) block per dispatch and submits after each; results match the reference as the unsplit run
    /// does, and the budget learns the kernels' rates from their measured device times.
    /// </summary>
    [Theory]
    [InlineData(AttentionAlgorithm.Flash)]
    [InlineData(AttentionAlgorithm.Direct)]
    public void TimeBudgetSplitMatchesCpuReference(AttentionAlgorithm algorithm)
    {
        var s = new AttentionShape(2, 67, 5, 4, 2, 16, 72);
        var (q, k, v, dO) = Inputs(s, 51);
        var budget = DispatchBudget.For(Ctx);
        var (enabled, target, submit) = (budget.Enabled, budget.TargetSeconds, budget.SubmitSeconds);
        long dispatches, submits;
        Result r;
        try
        {
            budget.Reset();
            (budget.Enabled, budget.TargetSeconds, budget.SubmitSeconds) = (true, 1e-12, 1e-12);
            long d0 = Ctx.Commands.TotalDispatches, s0 = Ctx.Commands.TotalSubmits;
            r = Run(s, q, k, v, dO, algorithm, out _, out _);
            (dispatches, submits) = (Ctx.Commands.TotalDispatches - d0, Ctx.Commands.TotalSubmits - s0);
            if (Ctx.Caps.TimestampsSupported)
                Assert.Contains(new[] { "attention.fwd", "attention.bwd.dq", "attention.bwd.dkv" },
                    label => budget.Rate($"{label}.{algorithm}") != DispatchBudget.InitialRate);
        }
        finally
        {
            (budget.Enabled, budget.TargetSeconds, budget.SubmitSeconds) = (enabled, target, submit);
            budget.Reset();
        }
        // Forward and dq: 72 keys in blocks of 16 → 5 dispatches each; dk/dv: 2 query heads per kv head × 5 row blocks.
        output.WriteLine($"{dispatches} dispatches, {submits} submits");
        Assert.True(dispatches >= 20, $"{dispatches} dispatches");
        Assert.True(submits >= 20, $"{submits} submits");
        Compare(s, q, k, v, dO, r);
    }

    /// <summary>The flash backward has no atomics and sums in a fixed order: two runs give bit-identical gradients.</summary>
    [Fact]
    public void FlashBackwardIsBitReproducible()
    {
        var s = new AttentionShape(1, 67, 3, 8, 2, 64, 70);
        var (q, k, v, dO) = Inputs(s, 61);
        var a = Run(s, q, k, v, dO, AttentionAlgorithm.Flash, out _, out _);
        var b = Run(s, q, k, v, dO, AttentionAlgorithm.Flash, out _, out _);
        Assert.Equal(a.Dq, b.Dq);
        Assert.Equal(a.Dk, b.Dk);
        Assert.Equal(a.Dv, b.Dv);
    }

    [Fact]
    public void RejectsBadShapes()
    {
        using var q = Guarded.Create(Ctx, "q", 4, 16);
        using var k = Guarded.Create(Ctx, "k", 4, 8);
        using var lse = Guarded.Create(Ctx, "lse", 2, 4);
        var e = Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(q.Tensor, k.Tensor, k.Tensor, q.Tensor, lse.Tensor, 1, 4, 1, 2, 1, 8));
        Assert.Contains("kvStride", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(q.Tensor, k.Tensor, k.Tensor, q.Tensor, lse.Tensor, 1, 4, 0, 3, 2, 8));
        Assert.Contains("multiple of nKvHeads", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(q.Tensor, k.Tensor, k.Tensor, q.Tensor, lse.Tensor, 1, 4, 0, 4, 2, 4));
        Assert.Contains("lse", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentException>(() => AttentionKernel.Forward(q.Tensor, k.Tensor, k.Tensor, q.Tensor, lse.Tensor, 1, 4, 0, 1, 1, 256));
        Assert.Contains("headDim", e.Message, StringComparison.Ordinal);
    }

    /// <summary>T=512, 8 heads (GQA 8:2), hd 64: prints the forward and backward wall time (after a warm-up run that creates the pipelines) and checks the results.
    /// In the Exhaustive tier: `bench kernels` measures attention at T = 512 and beyond, and the default tier's
    /// MatchesCpuReference cases run the same kernels of the chosen algorithms (T = 130, hd 64; T = 67, GQA 8:2).</summary>
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TimingT512()
    {
        var s = new AttentionShape(1, 512, 0, 8, 2, 64, 512);
        var (q, k, v, dO) = Inputs(s, 11);
        var algorithm = AttentionKernel.Choose(Ctx);
        Run(s, q, k, v, dO, algorithm, out _, out _);   // warm-up: pipelines
        var r = Run(s, q, k, v, dO, algorithm, out double fwdMs, out double bwdMs);
        output.WriteLine($"attention T=512 heads=8 kv=2 hd=64 on {Ctx.Caps.Name} ({algorithm}): forward {fwdMs:F1} ms, backward {bwdMs:F1} ms");
        Compare(s, q, k, v, dO, r);
    }

    /// <summary>q and k ~ N(0, 1.5²) (scores of order a few), v and dO ~ N(0, 1), from seeds seed..seed+3.</summary>
    private static (float[] Q, float[] K, float[] V, float[] DO) Inputs(AttentionShape s, int seed) =>
        (TestData.Normal(s.QCount, seed, 1.5f), TestData.Normal(s.KCount, seed + 1, 1.5f), TestData.Normal(s.KCount, seed + 2), TestData.Normal(s.QCount, seed + 3));

    private sealed record Result(float[] O, float[] Lse, float[] Dq, float[] Dk, float[] Dv, float[] Delta);

    private Result Run(AttentionShape s, float[] q, float[] k, float[] v, float[] dO, AttentionAlgorithm algorithm, out double fwdMs, out double bwdMs, int keysPerDispatch = 0, int pairsPerDispatch = 0)
    {
        long rows = s.Batch * s.SeqLen, kvRows = s.Batch * s.KvStride;
        using var tq = Guarded.Create(Ctx, "q", rows, s.Ldq);
        using var tk = Guarded.Create(Ctx, "k", kvRows, s.Ldk);
        using var tv = Guarded.Create(Ctx, "v", kvRows, s.Ldk);
        using var to = Guarded.Create(Ctx, "o", rows, s.Ldq);
        using var tl = Guarded.Create(Ctx, "lse", s.Batch, s.NHeads, s.SeqLen);
        using var tdo = Guarded.Create(Ctx, "dO", rows, s.Ldq);
        using var tdq = Guarded.Create(Ctx, "dq", rows, s.Ldq);
        using var tdk = Guarded.Create(Ctx, "dk", kvRows, s.Ldk);
        using var tdv = Guarded.Create(Ctx, "dv", kvRows, s.Ldk);
        using var td = Guarded.Create(Ctx, "delta", s.Batch, s.NHeads, s.SeqLen);
        tq.Upload(q); tk.Upload(k); tv.Upload(v); tdo.Upload(dO);
        Ctx.Sync();
        var sw = Stopwatch.StartNew();
        AttentionKernel.Forward(tq.Tensor, tk.Tensor, tv.Tensor, to.Tensor, tl.Tensor, s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm, keysPerDispatch);
        Ctx.Sync();
        fwdMs = sw.Elapsed.TotalMilliseconds;
        sw.Restart();
        AttentionKernel.Backward(tq.Tensor, tk.Tensor, tv.Tensor, to.Tensor, tl.Tensor, tdo.Tensor, tdq.Tensor, tdk.Tensor, tdv.Tensor, td.Tensor,
            s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm, keysPerDispatch, pairsPerDispatch);
        Ctx.Sync();
        bwdMs = sw.Elapsed.TotalMilliseconds;
        return new Result(to.Download(), tl.Download(), tdq.Download(), tdk.Download(), tdv.Download(), td.Download());
    }

    private void Compare(AttentionShape s, float[] qf, float[] kf, float[] vf, float[] dOf, Result r)
    {
        var q = AttentionReferenceTests.ToDouble(qf);
        var k = AttentionReferenceTests.ToDouble(kf);
        var v = AttentionReferenceTests.ToDouble(vf);
        var dO = AttentionReferenceTests.ToDouble(dOf);
        var (o, lse) = AttentionReference.Forward(q, k, v, s);
        var (dq, dk, dv, delta) = AttentionReference.Backward(q, k, v, dO, s);
        var tol = AttentionTolerances.For(s, q, k, v, dO);
        Report(o, r.O, tol.O, "o");
        Report(lse, r.Lse, tol.Lse, "lse");
        Report(delta, r.Delta, tol.Delta, "delta");
        Report(dq, r.Dq, tol.Dq, "dq");
        Report(dk, r.Dk, tol.Dk, "dk");
        Report(dv, r.Dv, tol.Dv, "dv");
    }

    /// <summary>Asserts |actual − expected| ≤ tol elementwise; prints the worst error and its ratio to the bound.</summary>
    private void Report(double[] expected, float[] actual, double[] tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0, ratio = 0; int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            worst = Math.Max(worst, err);
            if (!(err / tol[i] <= ratio)) { ratio = err / tol[i]; at = i; }   // NaN counts as worst
        }
        double scale = expected.Length == 0 ? 0 : expected.Max(Math.Abs);
        output.WriteLine($"{what}: max |err| {worst:G3} (max |ref| {scale:G3}), worst err/bound {ratio:F3}");
        Assert.True(ratio <= 1, $"{what}: element {at} is {actual[at]}, expected {expected[at]} (|err| {Math.Abs(actual[at] - expected[at]):G3} > bound {tol[at]:G3})");
    }
}
