// The split-aware PEFT kernels (dropout, activations, bias, group pooling) on tensors spanning several bindings, and
// MatMulTn summing over rows that span several bindings.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Ops.OpsAssert;
using R = VkPeft.Runtime.Reference.PeftKernelReference;

namespace VkPeft.Tests.PeftKernels;

[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class PeftSplitTests : SplitDeviceTests
{
    private const int Rows = 300, Cols = 257;

    [Fact]
    public void DropoutMaskUsesGlobalIndicesAcrossSegments()
    {
        var x = TestData.Uniform(Rows * Cols, 1, 0.5f, 1.5f);
        using var tx = Make("x", x, Rows, Cols);
        using var ty = Make("y", new float[x.Length], Rows, Cols);
        Assert.True(tx.Segments.Count >= 4);
        Dropout.Apply(tx, ty, 0.25f, 7);
        var y = ty.ToArray<float>();
        var mask = R.DropoutMask(7, x.Length, 0.25f);
        float scale = Dropout.Scale(0.25f);
        for (int i = 0; i < x.Length; i++) Assert.True(y[i] == (mask[i] ? x[i] * scale : 0f), $"element {i}");
    }

    [Fact]
    public void ActivationsAcrossSegments()
    {
        var x = TestData.Normal(Rows * Cols, 2, 3);
        var dy = TestData.Normal(Rows * Cols, 3);
        using var tx = Make("x", x, Rows, Cols);
        using var tdy = Make("dy", dy, Rows, Cols);
        using var ty = Make("y", new float[x.Length], Rows, Cols);
        var (xd, dyd) = (LayerReference.ToDouble(x), LayerReference.ToDouble(dy));
        foreach (var kind in Enum.GetValues<ActivationKind>())
        {
            var bounds = xd.Select(v => PeftOpsTests.ActivationBounds(kind, v)).ToArray();
            Activation.Forward(kind, tx, ty);
            Within(R.ActivationForward(kind, xd), ty.ToArray<float>(), i => bounds[i].Forward, $"split {kind} forward");
            Activation.Backward(kind, tx, tdy, ty);
            var dx = R.ActivationBackward(kind, xd, dyd);
            Within(dx, ty.ToArray<float>(), i => Math.Abs(dyd[i]) * bounds[i].Derivative + U * Math.Abs(dx[i]), $"split {kind} backward");
        }
    }

    [Fact]
    public void BiasAcrossSegments()
    {
        var y0 = TestData.Normal(Rows * Cols, 4);
        var b = TestData.Normal(Cols, 5);
        var dy = TestData.Normal(Rows * Cols, 6);
        using var ty = Make("y", y0, Rows, Cols);
        using var tb = Make("b", b, Cols);
        using var tdy = Make("dy", dy, Rows, Cols);
        using var tdb = Make("db", new float[Cols], Cols);
        Bias.Add(ty, tb);
        var y = R.BiasAdd(LayerReference.ToDouble(y0), LayerReference.ToDouble(b));
        Within(y, ty.ToArray<float>(), i => U * Math.Abs(y[i]), "split bias add");
        // Row-order sums per segment, each segment's sum then added to db: still Rows − 1 additions per column.
        Bias.Grad(tdy, tdb, accumulate: false);
        var db = R.BiasGrad(LayerReference.ToDouble(dy), Cols);
        var absSum = R.BiasGrad(dy.Select(v => (double)Math.Abs(v)).ToArray(), Cols);
        Within(db, tdb.ToArray<float>(), i => Rows * U / (1 - Rows * U) * absSum[i], "split bias grad");
    }

    [Fact]
    public void GroupPoolAcrossSegments()
    {
        const int k = 256, g = 32, l = k / g;
        var x = TestData.Normal(Rows * k, 7);
        var dy = TestData.Normal(Rows * l, 8);
        using var tx = Make("x", x, Rows, k);
        using var ty = Make("y", new float[Rows * l], Rows, l);
        Assert.True(tx.Segments.Count >= 4);
        GroupPool.Forward(tx, ty, g);
        var y = R.GroupPoolForward(LayerReference.ToDouble(x), Rows, k, g);
        var absMean = R.GroupPoolForward(x.Select(v => (double)Math.Abs(v)).ToArray(), Rows, k, g);
        Within(y, ty.ToArray<float>(), i => (g + 1) * U * absMean[i], "split group pool");
        ty.Upload<float>(dy);
        GroupPool.Backward(ty, tx, g, accumulate: false);
        var dx = R.GroupPoolBackward(LayerReference.ToDouble(dy), Rows, k, g);
        Within(dx, tx.ToArray<float>(), i => PeftOpsTests.TwoRoundings * Math.Abs(dx[i]), "split group pool backward");
    }

    [Theory]
    [InlineData(MatMulAlgorithm.Lanes)]
    [InlineData(MatMulAlgorithm.SharedTiles)]
    public void MatMulTnSumsRowsAcrossBindings(MatMulAlgorithm algorithm)
    {
        // A [300, 257] spans 5 bindings, B [300, 3] fits one; C = 0.5·Aᵀ·B + C sums the row pieces in order.
        var a = TestData.Uniform(Rows * Cols, 11);
        var b = TestData.Uniform(Rows * 3, 12);
        var c0 = TestData.Uniform(Cols * 3, 13);
        using var ta = Make("a", a, Rows, Cols);
        using var tb = Make("b", b, Rows, 3);
        using var tc = Make("c", c0, Cols, 3);
        Assert.True(ta.Segments.Count > 1);
        MatMulTn.Run(ta, tb, tc, 0.5f, 1f, algorithm);
        var (c, absSum) = R.MatMulTn(LayerReference.ToDouble(a), LayerReference.ToDouble(b), Rows, Cols, 3, 0.5, 1, LayerReference.ToDouble(c0));
        // One fp32 fma chain of Rows+1 terms per output: |err| ≤ γ_(M+1)·Σ|terms|.
        Within(c, tc.ToArray<float>(), i => (Rows + 1) * U / (1 - (Rows + 1) * U) * absSum[i], "split matmul_tn");
    }
}
