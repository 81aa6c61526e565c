// GPU-vs-CPU tests of the layer ops (embedding, RMSNorm, RoPE, SwiGLU, cross-entropy) on awkward sizes with guard regions.
using Xunit.Abstractions;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;

namespace VkPeft.Tests.Ops;

[Collection("gpu")]
public sealed class LayerOpsTests(GpuFixture gpu, ITestOutputHelper log)
{
    private VulkanContext Ctx => gpu.Context;

    private static double[] D(float[] x) => LayerReference.ToDouble(x);

    internal static DeviceTensor Ints(VulkanContext ctx, string name, int[] data)
    {
        var t = DeviceTensor.Create(ctx, name, DType.I32, [data.Length], MemoryCategory.Workspace);
        t.Upload<int>(data);
        return t;
    }

    internal static int[] Ids(int n, int vocab, int seed, int distinct)
    {
        var rng = new Random(seed);
        var ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = rng.Next(distinct) * (vocab / distinct);   // few distinct ids: many duplicates
        if (n > 3) { ids[1] = -1; ids[n / 2] = vocab; ids[n - 1] = vocab - 1; }           // invalid ids and the last row
        return ids;
    }

    [Theory]
    [InlineData(1000, 257, 300)]
    [InlineData(67, 1, 5)]
    [InlineData(33, 65, 1)]
    public void EmbeddingForwardGathersRows(int vocab, int dim, int tokens)
    {
        var table = TestData.Normal(vocab * dim, vocab + dim);
        var ids = Ids(tokens, vocab, tokens, Math.Min(vocab, 40));
        using var tt = Guarded.Create(Ctx, "table", vocab, dim);
        using var ti = Ints(Ctx, "ids", ids);
        using var ty = Guarded.Create(Ctx, "y", tokens, dim);
        tt.Upload(table);
        BasicOps.Fill(ty.Tensor, 7);
        Embedding.Forward(tt.Tensor, ti, ty.Tensor);
        var expected = LayerReference.EmbeddingForward(D(table), vocab, dim, ids);
        Within(expected, ty.Download(), _ => 0, "embedding forward (a copy: exact; invalid ids give zeros)", log);
    }

    /// <summary>
    /// Recursive fp32 summation of the initial value and the k token rows of an id: |err| ≤ γ_k·(|init| + Σ|dy|) with
    /// γ_k = k·u/(1 − k·u) (Higham, Accuracy and Stability of Numerical Algorithms, §4.2); untouched rows must be exact.
    /// </summary>
    internal static Func<int, double> EmbeddingGradTolerance(int[] ids, float[] dy, float[]? init, int vocab, int dim)
    {
        var bound = new double[vocab * dim];
        var terms = new int[vocab];
        if (init is not null) for (int i = 0; i < bound.Length; i++) bound[i] = Math.Abs(init[i]);
        for (int t = 0; t < ids.Length; t++)
            if (ids[t] >= 0 && ids[t] < vocab)
            {
                terms[ids[t]]++;
                for (int c = 0; c < dim; c++) bound[ids[t] * dim + c] += Math.Abs(dy[t * dim + c]);
            }
        return i => terms[i / dim] * U / (1 - terms[i / dim] * U) * bound[i];
    }

    [Theory]
    [InlineData(67, 129, 333)]
    [InlineData(1000, 257, 600)]
    [InlineData(5, 3, 1)]
    public void EmbeddingBackwardScatterAddsDuplicatesDeterministically(int vocab, int dim, int tokens)
    {
        var ids = Ids(tokens, vocab, vocab * 3 + tokens, Math.Min(vocab, 23));
        var dy = TestData.Normal(tokens * dim, dim);
        var init = TestData.Normal(vocab * dim, vocab);
        using var ti = Ints(Ctx, "ids", ids);
        using var tdy = Guarded.Create(Ctx, "dy", tokens, dim);
        using var td = Guarded.Create(Ctx, "dtable", vocab, dim);
        tdy.Upload(dy);
        td.Upload(init);
        Embedding.Backward(ti, tdy.Tensor, td.Tensor);
        var got = td.Download();
        var expected = LayerReference.EmbeddingBackward(ids, D(dy), vocab, dim, D(init));
        Within(expected, got, EmbeddingGradTolerance(ids, dy, init, vocab, dim), "embedding backward", log);
        // Same inputs, same bits.
        td.Upload(init);
        Embedding.Backward(ti, tdy.Tensor, td.Tensor);
        Assert.Equal(got, td.Download());
    }

    [Theory]
    [InlineData(67, 1000)]
    [InlineData(5, 4099)]
    [InlineData(300, 7)]
    [InlineData(1, 1)]
    public void RmsNormForwardBackwardAndWeightGradMatchCpu(int rows, int dim)
    {
        const float eps = 1e-5f;
        var x = TestData.Normal(rows * dim, rows + dim, 2);
        var w = TestData.Uniform(dim, dim, 0.5f, 1.5f);
        var dy = TestData.Normal(rows * dim, rows * dim);
        var dxInit = TestData.Normal(rows * dim, 3 * rows);
        using var tx = Guarded.Create(Ctx, "x", rows, dim);
        using var tw = Guarded.Create(Ctx, "w", dim);
        using var ty = Guarded.Create(Ctx, "y", rows, dim);
        using var tr = Guarded.Create(Ctx, "rstd", rows);
        using var tr2 = Guarded.Create(Ctx, "rstd2", rows);
        using var tdy = Guarded.Create(Ctx, "dy", rows, dim);
        using var tdx = Guarded.Create(Ctx, "dx", rows, dim);
        using var tdw = Guarded.Create(Ctx, "dw", dim);
        tx.Upload(x); tw.Upload(w); tdy.Upload(dy);
        var (xd, wd, dyd) = (D(x), D(w), D(dy));
        var (y, rstd) = LayerReference.RmsNormForward(xd, wd, rows, dim, eps);
        var (dx, dw) = LayerReference.RmsNormBackward(xd, wd, dyd, rows, dim, eps);

        // Sum of squares: each lane adds ⌈dim/256⌉ terms, then an 8-level tree (all terms positive): relative error
        // ≤ (⌈dim/256⌉ + 8)·u; rstd halves it and adds inversesqrt's 2 ulp; y adds two products. Hence γ below.
        double gamma = (Math.Ceiling(dim / 256.0) + 16) * U;
        RmsNorm.Forward(tx.Tensor, tw.Tensor, ty.Tensor, eps, tr.Tensor);
        Within(y, ty.Download(), i => gamma * Math.Abs(y[i]) + 1e-30, "rmsnorm y", log);
        Within(rstd, tr.Download(), i => gamma * rstd[i], "rmsnorm rstd", log);

        // dx = rstd·w·dy − k·x with k = rstd³·Σ(w·dy·x)/dim: the dot product has mixed signs, so its error is bounded by
        // γ·Σ|w·dy·x|; the two terms may cancel, so the bound is on their magnitudes, not on |dx|.
        var dotAbs = new double[rows];
        for (int r = 0; r < rows; r++) for (int c = 0; c < dim; c++) dotAbs[r] += Math.Abs(wd[c] * dyd[r * dim + c] * xd[r * dim + c]);
        double DxTol(int i)
        {
            int r = i / dim, c = i % dim;
            double rs = rstd[r], term1 = Math.Abs(rs * wd[c] * dyd[i]), term2 = Math.Abs(xd[i]) * rs * rs * rs * dotAbs[r] / dim;
            return gamma * 2 * (term1 + term2) + 1e-30;
        }
        RmsNorm.Backward(tx.Tensor, tw.Tensor, tdy.Tensor, tdx.Tensor, eps, accumulate: false, rstd: tr2.Tensor);
        Within(dx, tdx.Download(), DxTol, "rmsnorm dx", log);
        Within(rstd, tr2.Download(), i => gamma * rstd[i], "rmsnorm backward rstd", log);
        tdx.Upload(dxInit);
        RmsNorm.Backward(tx.Tensor, tw.Tensor, tdy.Tensor, tdx.Tensor, eps, accumulate: true);
        var dxAcc = dx.Select((v, i) => v + dxInit[i]).ToArray();
        Within(dxAcc, tdx.Download(), i => DxTol(i) + U * (Math.Abs(dxAcc[i]) + Math.Abs(dxInit[i])), "rmsnorm dx accumulated", log);
        // In place over dy.
        RmsNorm.Backward(tx.Tensor, tw.Tensor, tdy.Tensor, tdy.Tensor, eps);
        Within(dx, tdy.Download(), DxTol, "rmsnorm dx in place", log);

        // dw[c] = Σ_r dy·x·rstd, summed in row order over fp32 products: ≤ (rows + 2)·u·Σ|terms| + rstd's own error.
        var dwAbs = new double[dim];
        for (int r = 0; r < rows; r++) for (int c = 0; c < dim; c++) dwAbs[c] += Math.Abs(dyd[r * dim + c] * xd[r * dim + c] * rstd[r]);
        tdy.Upload(dy);
        var dwInit = TestData.Normal(dim, 77);
        tdw.Upload(dwInit);
        RmsNorm.AccumulateWeightGrad(tx.Tensor, tdy.Tensor, tr.Tensor, tdw.Tensor);
        var dwAcc = dw.Select((v, c) => v + dwInit[c]).ToArray();
        Within(dwAcc, tdw.Download(), c => (rows + 3) * U * (dwAbs[c] + Math.Abs(dwInit[c])) + gamma * dwAbs[c], "rmsnorm dw", log);
    }

    public static TheoryData<RopePairing, int, int, long, long> RopeCases => new()
    {
        { RopePairing.Interleaved, 37, 64, 0, 0 },
        { RopePairing.RotateHalf, 37, 64, 0, 0 },
        { RopePairing.Interleaved, 19, 34, 5000, 0 },    // long positions: angles up to ~5000 rad
        { RopePairing.RotateHalf, 19, 34, 5000, 0 },
        { RopePairing.RotateHalf, 41, 6, 3, 10 },        // positions restart every 10 rows (packed sequences)
        { RopePairing.Interleaved, 1, 2, 131000, 0 },
    };

    [Theory]
    [MemberData(nameof(RopeCases))]
    public void RopeMatchesCpuForwardAndBackward(RopePairing pairing, int rows, int headDim, long startPos, long seqLen)
    {
        foreach (int heads in new[] { 5, 1 })   // q and a single GQA k head
        {
            int rowElems = heads * headDim;
            var x = TestData.Normal(rows * rowElems, rows * heads + headDim);
            // llama3-style frequencies with a scaled band, rounded to fp32 as the host would store them.
            var invFreq = Enumerable.Range(0, headDim / 2).Select(i => (float)(Math.Pow(500000, -2.0 * i / headDim) / (i > headDim / 4 ? 8 : 1))).ToArray();
            using var tx = Guarded.Create(Ctx, "x", rows, rowElems);
            using var tf = Guarded.Create(Ctx, "inv_freq", headDim / 2);
            using var ty = Guarded.Create(Ctx, "y", rows, rowElems);
            tx.Upload(x); tf.Upload(invFreq);
            bool half = pairing == RopePairing.RotateHalf;
            var y = LayerReference.Rope(D(x), D(invFreq), rows, rowElems, headDim, half, startPos, seqLen);
            // The angle pos·f is formed exactly and reduced mod 2π (error ≤ ~k·1e-12 + 2 ulp of |r| ≤ π, k ≤ 2e4 turns),
            // then sin/cos (measured ≈ 5e-7 absolute on lavapipe; Vulkan itself only promises 2⁻¹¹ in [−π, π]) and two
            // products and a sum per output: |err| ≤ 2e-6·(|x_a| + |x_b|) on this device (measured ≤ 0.45 of it).
            double Tol(int i, double[] src)
            {
                int r = i / rowElems, j = i % rowElems, hd = j / headDim * headDim, e = j % headDim;
                int partner = half ? (e < headDim / 2 ? e + headDim / 2 : e - headDim / 2) : e ^ 1;
                return 2e-6 * (Math.Abs(src[i]) + Math.Abs(src[r * rowElems + hd + partner]));
            }
            var xd = D(x);
            Rope.Apply(tx.Tensor, ty.Tensor, tf.Tensor, headDim, pairing, startPos, seqLen);
            Within(y, ty.Download(), i => Tol(i, xd), $"rope {pairing} heads {heads} start {startPos}", log);
            // Backward: rotation by −θ, in place.
            var dx = LayerReference.Rope(D(x), D(invFreq), rows, rowElems, headDim, half, startPos, seqLen, inverse: true);
            Rope.Apply(tx.Tensor, tx.Tensor, tf.Tensor, headDim, pairing, startPos, seqLen, inverse: true);
            Within(dx, tx.Download(), i => Tol(i, xd), $"rope backward in place {pairing} heads {heads}", log);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(257)]
    [InlineData(70001)]
    public void SwiGluMatchesCpu(int n)
    {
        var g = TestData.Normal(n, n, 4);
        g[0] = -90; if (n > 2) { g[1] = 90; g[2] = -1.2785f; }   // saturated sigmoid both ways; near the zero of dσ-term
        var u = TestData.Normal(n, n + 1);
        var dh = TestData.Normal(n, n + 2);
        using var tg = Guarded.Create(Ctx, "g", n);
        using var tu = Guarded.Create(Ctx, "u", n);
        using var th = Guarded.Create(Ctx, "h", n);
        using var tdh = Guarded.Create(Ctx, "dh", n);
        tg.Upload(g); tu.Upload(u); tdh.Upload(dh);
        var (gd, ud, dhd) = (D(g), D(u), D(dh));
        var h = LayerReference.SwiGluForward(gd, ud);
        var (dg, du) = LayerReference.SwiGluBackward(gd, ud, dhd);
        // σ(g) = 1/(1 + exp(−g)): exp is within (3 + 2|g|) ulp (Vulkan's bound), the division 2.5 ulp, and the σ error
        // scales by (1 − σ) ≤ 1; a few products follow. Hence a relative bound (10 + 2|g|)·u on each factor chain, plus
        // 1e-35 absolute: σ(−90) ≈ 8e-40 is an fp32 denormal, which devices may flush to zero.
        double Rel(int i) => (10 + 2 * Math.Abs(gd[i])) * U;
        SwiGlu.Forward(tg.Tensor, tu.Tensor, th.Tensor);
        Within(h, th.Download(), i => Rel(i) * Math.Abs(h[i]) + 1e-35, "swiglu h", log);
        using var tdg = Guarded.Create(Ctx, "dg", n);
        using var tdu = Guarded.Create(Ctx, "du", n);
        SwiGlu.Backward(tg.Tensor, tu.Tensor, tdh.Tensor, tdg.Tensor, tdu.Tensor);
        // dg = dh·u·σ·(1 + g(1 − σ)): the bracket can cancel, so its bound is on the magnitudes σ·(1 + |g|(1 − σ)).
        double s(int i) => 1 / (1 + Math.Exp(-gd[i]));
        Within(dg, tdg.Download(), i => 2 * Rel(i) * Math.Abs(dhd[i] * ud[i]) * s(i) * (1 + Math.Abs(gd[i]) * (1 - s(i))) + 1e-35, "swiglu dg", log);
        Within(du, tdu.Download(), i => Rel(i) * Math.Abs(du[i]) + 1e-35, "swiglu du", log);
        // In place over the saved activations, and forward in place over gate.
        SwiGlu.Backward(tg.Tensor, tu.Tensor, tdh.Tensor, tg.Tensor, tu.Tensor);
        Within(dg, tg.Download(), i => 2 * Rel(i) * Math.Abs(dhd[i] * ud[i]) * s(i) * (1 + Math.Abs(gd[i]) * (1 - s(i))) + 1e-35, "swiglu dg in place", log);
        Within(du, tu.Download(), i => Rel(i) * Math.Abs(du[i]) + 1e-35, "swiglu du in place", log);
    }

    [Theory]
    [InlineData(37, 1000)]
    [InlineData(5, 4099)]
    [InlineData(3, 513)]
    [InlineData(1, 1)]
    public void CrossEntropyLossAndGradientMatchCpu(int rows, int cols)
    {
        var z = TestData.Normal(rows * cols, rows + cols, 5);
        if (rows > 2) for (int c = 0; c < cols; c++) z[2 * cols + c] += 1000;   // would overflow exp without the max shift
        var rng = new Random(rows * cols);
        var targets = Enumerable.Range(0, rows).Select(_ => rng.Next(cols)).ToArray();
        if (rows > 1) targets[1] = -1;
        if (rows > 4) targets[4] = -100;   // any negative target is masked (PyTorch's ignore_index)
        int valid = targets.Count(t => t >= 0);
        float scale = 1f / Math.Max(valid, 1);
        using var tz = Guarded.Create(Ctx, "logits", rows, cols);
        using var tt = Ints(Ctx, "targets", targets);
        using var tl = Guarded.Create(Ctx, "loss", rows);
        tz.Upload(z);
        var zd = D(z);
        var (loss, dz) = LayerReference.CrossEntropy(zd, targets, rows, cols, scale);
        // Σexp(z − m): ⌈cols/256⌉ sequential + 8 tree levels of positive terms, each exp within (3 + 2|z − m|) ulp: the
        // relative error of s is ≤ γ; log(s) is then off by γ + 3 ulp, and lse − z_t rounds at |m| + |z_t| scale.
        var rowMax = Enumerable.Range(0, rows).Select(r => zd.Skip(r * cols).Take(cols).Max()).ToArray();
        var rowMin = Enumerable.Range(0, rows).Select(r => zd.Skip(r * cols).Take(cols).Min()).ToArray();
        double Gamma(int r) => (Math.Ceiling(cols / 256.0) + 8 + 3 + 2 * (rowMax[r] - rowMin[r])) * U;
        double LossTol(int r) => targets[r] < 0 ? 0 : 2 * Gamma(r) + 4 * U * (Math.Abs(rowMax[r]) + Math.Abs(loss[r]) + Math.Log(cols) + 1);
        CrossEntropy.Loss(tz.Tensor, tt, tl.Tensor);
        Within(loss, tl.Download(), LossTol, "cross-entropy loss", log);
        Assert.Equal(z, tz.Download());   // Loss leaves the logits alone
        CrossEntropy.LossAndGradient(tz.Tensor, tt, tl.Tensor, scale);
        Within(loss, tl.Download(), LossTol, "cross-entropy loss (with gradient)", log);
        // dz = (p − onehot)·scale: p carries the relative error of exp and s (2γ), plus the scale product and the
        // subtraction of 1 at the target (one rounding at magnitude scale).
        Within(dz, tz.Download(), i =>
        {
            int r = i / cols;
            if (targets[r] < 0) return 0;
            double p = Math.Exp(zd[i] - rowMax[r]) / Enumerable.Range(0, cols).Sum(c => Math.Exp(zd[r * cols + c] - rowMax[r]));
            return scale * (2 * Gamma(r) * p + 2 * U * (p + 1)) + 1e-38;
        }, "cross-entropy dlogits", log);
    }

    [Fact]
    public void CrossEntropyTargetOutOfRangeGivesNaN()
    {
        using var tz = Guarded.Create(Ctx, "logits", 2, 7);
        using var tt = Ints(Ctx, "targets", [7, 0]);
        using var tl = Guarded.Create(Ctx, "loss", 2);
        tz.Upload(TestData.Normal(14, 1));
        CrossEntropy.Loss(tz.Tensor, tt, tl.Tensor);
        var l = tl.Download();
        Assert.True(float.IsNaN(l[0]));
        Assert.False(float.IsNaN(l[1]));
    }

    [Fact]
    public void ShapeMismatchesAreRejected()
    {
        using var a = Guarded.Create(Ctx, "a", 4, 6);
        using var w = Guarded.Create(Ctx, "w", 5);
        using var f = Guarded.Create(Ctx, "f", 2);
        using var ids = Ints(Ctx, "ids", [1, 2, 3]);
        Assert.Throws<ArgumentException>(() => RmsNorm.Forward(a.Tensor, w.Tensor, a.Tensor, 1e-5f));
        Assert.Throws<ArgumentException>(() => Rope.Apply(a.Tensor, a.Tensor, f.Tensor, 4, RopePairing.Interleaved));   // 6 is not whole heads of 4
        Assert.Throws<ArgumentException>(() => Rope.Apply(a.Tensor, a.Tensor, f.Tensor, 3, RopePairing.Interleaved));   // odd head size
        Assert.Throws<ArgumentException>(() => Embedding.Forward(a.Tensor, ids, a.Tensor));                             // output needs 3 rows
        Assert.Throws<ArgumentException>(() => Embedding.Forward(a.Tensor, a.Tensor, a.Tensor));                        // ids must be I32
        Assert.Throws<ArgumentException>(() => CrossEntropy.Loss(a.Tensor, ids, f.Tensor));                             // 4 rows, 3 targets
    }
}
