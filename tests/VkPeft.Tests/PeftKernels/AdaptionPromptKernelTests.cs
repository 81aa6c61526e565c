// GPU-vs-CPU tests of LLaMA-Adapter's gated prompt attention (adaption_prompt_fwd and adaption_prompt_bwd): forward
// probabilities, ungated and gated outputs, and the backward's dq (added to what dq held), prompt key/value and gate
// gradients, on awkward row counts, head dimensions and prompt lengths, grouped-query ratios 1 to 4, guard regions, and
// enough rows that the dk/dv row sum is chained over several dispatches on CPU devices.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.PeftKernels;

[Collection("gpu")]
public sealed class AdaptionPromptKernelTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    // rows, query heads, KV heads, head dim, prompt length: element counts off every workgroup (64) and block (256) size.
    public static TheoryData<int, int, int, int, int> Cases => new()
    {
        { 1, 1, 1, 8, 1 }, { 37, 6, 2, 12, 7 }, { 67, 4, 1, 16, 5 }, { 131, 6, 3, 8, 3 }, { 5, 4, 2, 64, 17 },
        { 3, 2, 1, 128, 10 }, { 12003, 4, 1, 8, 3 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchFloat64Reference(int rows, int nHeads, int nKvHeads, int headDim, int promptLength)
    {
        var s = new AdaptionPromptShape(rows, nHeads, nKvHeads, headDim, promptLength);
        int qn = rows * s.QWidth, kn = promptLength * s.KvWidth, pn = rows * nHeads * promptLength;
        var q = TestData.Normal(qn, 1);
        var k = TestData.Normal(kn, 2);
        var v = TestData.Normal(kn, 3);
        var baseOut = TestData.Normal(qn, 4);
        var dOut = TestData.Normal(qn, 5);
        var dq0 = TestData.Normal(qn, 6);   // the causal attention's dq, which the backward adds to
        const float gate = -0.7f;

        var gq = Input("q", q); var gk = Input("k", k); var gv = Input("v", v); var gg = Input("gate", [gate]);
        var gBase = Input("base", baseOut); var gdOut = Input("dout", dOut);
        using var probs = Guarded.Create(Ctx, "probs", pn);
        using var ungated = Guarded.Create(Ctx, "ungated", qn);
        using var output = Guarded.Create(Ctx, "out", qn);
        using var dScores = Guarded.Create(Ctx, "dscores", pn);
        using var rowDots = Guarded.Create(Ctx, "dots", rows * nHeads);
        using var dq = Guarded.Create(Ctx, "dq", qn);
        using var dk = Guarded.Create(Ctx, "dk", kn);
        using var dv = Guarded.Create(Ctx, "dv", kn);
        using var dGate = Guarded.Create(Ctx, "dgate", 1);
        dq.Upload(dq0);
        try
        {
            AdaptionPrompt.Forward(gq.Tensor, gk.Tensor, gv.Tensor, gg.Tensor, gBase.Tensor, probs.Tensor, ungated.Tensor, output.Tensor, nHeads, nKvHeads, headDim);
            AdaptionPrompt.Backward(gq.Tensor, gk.Tensor, gv.Tensor, gg.Tensor, probs.Tensor, ungated.Tensor, gdOut.Tensor, dScores.Tensor, rowDots.Tensor,
                dq.Tensor, dk.Tensor, dv.Tensor, dGate.Tensor, nHeads, nKvHeads, headDim);
            Ctx.Sync();

            double[] D(float[] x) => [.. x.Select(a => (double)a)];
            var (eP, eA, eOut) = AdaptionPromptReference.Forward(D(q), D(k), D(v), gate, D(baseOut), s);
            var (eDq, eDk, eDv, eDg) = AdaptionPromptReference.Backward(D(q), D(k), D(v), gate, D(dOut), s);
            // fp32 with inputs of order 1: a score is a sum of hd products and exp adds a few ulps, so a probability is
            // off by ~(hd + 8)·u relative; each output sums P or hd (dq/dk/dv: rows·group for dk/dv) such terms. The
            // absolute bounds below are (terms)·(term magnitude ≤ ~5)·64u rounded up; a wrong index or a dropped term
            // moves an output by a whole term (order 0.1–1), far outside them.
            double u = 1.0 / (1 << 24);
            double Bound(int terms) => 64 * u * 5 * (terms + headDim + 8);
            TestData.Close(eP, probs.Download(), Bound(headDim), 0, "probabilities");
            TestData.Close(eA, ungated.Download(), Bound(promptLength), 0, "ungated output");
            TestData.Close(eOut, output.Download(), Bound(promptLength), 0, "gated output");
            TestData.Close([.. eDq.Select((x, i) => x + dq0[i])], dq.Download(), Bound(promptLength * 4), 0, "dq");
            // dk/dv sum N = rows·group terms of magnitude ~RMS/√N with independent roundings, which grow like √N·u·RMS;
            // 2e-6·√N·RMS (≈ 33·√N·u·RMS) bounds them, while one row left out moves an element by ~RMS/√N (5e-3·RMS at
            // 12,003 rows, 10x the bound there).
            int sums = rows * s.Group;
            double Rms(double[] x) => Math.Sqrt(x.Sum(a => a * a) / x.Length);
            TestData.Close(eDk, dk.Download(), Bound(headDim) + 2e-6 * Math.Sqrt(sums) * Rms(eDk), 0, "dk");
            TestData.Close(eDv, dv.Download(), Bound(headDim) + 2e-6 * Math.Sqrt(sums) * Rms(eDv), 0, "dv");
            // ∂gate sums rows·n_heads dot products of hd terms (then a tree of partial sums): off by at most
            // (hd + 64)·u of the sum of the terms' magnitudes, times the 64u-per-term slack used above.
            double magnitude = eA.Select((a, i) => Math.Abs(a * dOut[i])).Sum();
            var got = dGate.Download()[0];
            Assert.True(Math.Abs(got - eDg) <= 64 * u * (headDim + 64) * magnitude, $"dgate {got} vs {eDg}");
        }
        finally
        {
            foreach (var g in new[] { gq, gk, gv, gg, gBase, gdOut }) g.Dispose();
        }
    }

    [Fact]
    public void ZeroGateLeavesTheBaseOutputBitForBit()
    {
        var s = new AdaptionPromptShape(19, 4, 2, 8, 6);
        int qn = s.Rows * s.QWidth;
        var baseOut = TestData.Normal(qn, 9);
        using var q = Input("q", TestData.Normal(qn, 10));
        using var k = Input("k", TestData.Normal(s.PromptLength * s.KvWidth, 11));
        using var v = Input("v", TestData.Normal(s.PromptLength * s.KvWidth, 12));
        using var g = Input("gate", [0f]);
        using var b = Input("base", baseOut);
        using var probs = Guarded.Create(Ctx, "probs", s.Rows * s.NHeads * s.PromptLength);
        using var a = Guarded.Create(Ctx, "ungated", qn);
        using var o = Guarded.Create(Ctx, "out", qn);
        AdaptionPrompt.Forward(q.Tensor, k.Tensor, v.Tensor, g.Tensor, b.Tensor, probs.Tensor, a.Tensor, o.Tensor, s.NHeads, s.NKvHeads, s.HeadDim);
        Assert.Equal(baseOut, o.Download());
    }

    [Fact]
    public void PromptLongerThanTheKernelsTakeIsRefused()
    {
        using var q = Guarded.Create(Ctx, "q", 2, 8);
        using var k = Guarded.Create(Ctx, "k", AdaptionPrompt.MaxPromptLength + 1, 8);
        using var g = Guarded.Create(Ctx, "gate", 1);
        using var p = Guarded.Create(Ctx, "p", 2 * (AdaptionPrompt.MaxPromptLength + 1));
        var e = Assert.Throws<ArgumentException>(() =>
            AdaptionPrompt.Forward(q.Tensor, k.Tensor, k.Tensor, g.Tensor, q.Tensor, p.Tensor, q.Tensor, q.Tensor, 1, 1, 8));
        Assert.Contains("at most", e.Message);
    }

    private Guarded Input(string name, float[] data)
    {
        var g = Guarded.Create(Ctx, name, data.Length);
        g.Upload(data);
        return g;
    }
}
