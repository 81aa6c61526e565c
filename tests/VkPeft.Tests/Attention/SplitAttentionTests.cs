// Attention whose query-side operands span several bindings (long sequences on devices with small bindings, such as
// lavapipe's 128 MiB): the kernels run in query chunks against the keys each chunk sees; results match the reference.
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Attention;

[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class SplitAttentionTests : SplitDeviceTests
{
    [Theory]
    [InlineData(1, 150, 0, 2, AttentionAlgorithm.Direct)]    // q 77 KB: two query chunks
    [InlineData(2, 137, 0, 1, AttentionAlgorithm.Direct)]    // chunks cut inside and across sequences (GQA 4:1)
    [InlineData(1, 150, 0, 2, AttentionAlgorithm.Shared)]
    [InlineData(1, 131, 9, 2, AttentionAlgorithm.Direct)]    // queries after a prefix of cached keys
    [InlineData(2, 137, 0, 1, AttentionAlgorithm.Flash)]
    [InlineData(1, 131, 9, 2, AttentionAlgorithm.Flash)]
    public void SplitQueriesMatchReference(int batch, int seqLen, int startPos, int nKvHeads, AttentionAlgorithm algorithm)
    {
        var s = new AttentionShape(batch, seqLen, startPos, 4, nKvHeads, 32, startPos + seqLen);
        long rows = (long)batch * seqLen, kvRows = (long)batch * s.KvStride;
        var q = TestData.Normal(s.QCount, 41, 1.5f);
        var k = TestData.Normal(s.KCount, 42, 1.5f);
        var v = TestData.Normal(s.KCount, 43);
        var dO = TestData.Normal(s.QCount, 44);
        DeviceTensor T(string name, params long[] shape) => DeviceTensor.Create(Ctx, name, DType.F32, shape, MemoryCategory.Workspace);
        using var tq = Make("q", q, rows, s.Ldq);
        using var tk = Make("k", k, kvRows, s.Ldk);
        using var tv = Make("v", v, kvRows, s.Ldk);
        using var tdo = Make("dO", dO, rows, s.Ldq);
        using var to = T("o", rows, s.Ldq);
        using var tl = T("lse", batch, s.NHeads, seqLen);
        using var tdq = T("dq", rows, s.Ldq);
        using var tdk = T("dk", kvRows, s.Ldk);
        using var tdv = T("dv", kvRows, s.Ldk);
        using var td = T("delta", batch, s.NHeads, seqLen);
        Assert.True(tq.Segments.Count > 1 && to.Segments.Count > 1 && tdq.Segments.Count > 1);
        AttentionKernel.Forward(tq, tk, tv, to, tl, batch, seqLen, startPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);
        AttentionKernel.Backward(tq, tk, tv, to, tl, tdo, tdq, tdk, tdv, td, batch, seqLen, startPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);

        var (qd, kd, vd, dOd) = (AttentionReferenceTests.ToDouble(q), AttentionReferenceTests.ToDouble(k), AttentionReferenceTests.ToDouble(v), AttentionReferenceTests.ToDouble(dO));
        var (o, lse) = AttentionReference.Forward(qd, kd, vd, s);
        var (dq, dk, dv, _) = AttentionReference.Backward(qd, kd, vd, dOd, s);
        var tol = AttentionTolerances.For(s, qd, kd, vd, dOd);
        Check(o, to.ToArray<float>(), tol.O, "o");
        Check(lse, tl.ToArray<float>(), tol.Lse, "lse");
        Check(dq, tdq.ToArray<float>(), tol.Dq, "dq");
        Check(dk, tdk.ToArray<float>(), tol.Dk, "dk");
        Check(dv, tdv.ToArray<float>(), tol.Dv, "dv");
    }

    private static void Check(double[] expected, float[] actual, double[] tol, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tol[i], $"{what}[{i}] = {actual[i]}, expected {expected[i]} (bound {tol[i]:G3})");
    }
}
