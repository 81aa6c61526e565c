// The NV cooperative-matrix flash attention variants (lavapipe cannot run them): selection from a capabilities record,
// the shared memory they declare, Auto and --kernels safe keeping them off where they cannot run, and the first-use
// self-check — a matching kernel passes it, and an fp16 kernel without range scaling and hi/lo operands (emulated here by
// rounding the inputs to fp16 before the fp32 flash kernel) is caught by its large-score, tiny-dO case and switched off
// with one warning.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Runtime;
using VkPeft.Tests.Support;
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;

namespace VkPeft.Tests.Attention;

[Collection("gpu")]
public sealed class AttentionCoopMatrixTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static readonly AttentionKernel.SelfCheckRunner Fp32Flash = (c, s, t) => AttentionKernel.RunForwardBackward(c, s, t, AttentionAlgorithm.Flash);

    /// <summary>A naive fp16 kernel: the inputs rounded to fp16 (subnormals kept as fp16 has them), then the fp32 flash kernel.</summary>
    private static readonly AttentionKernel.SelfCheckRunner NaiveFp16 = (c, s, t) =>
    {
        static float[] Round(float[] x) => Array.ConvertAll(x, v => (float)(Half)v);
        return AttentionKernel.RunForwardBackward(c, s, new(Round(t.Q), Round(t.K), Round(t.V), Round(t.DO)), AttentionAlgorithm.Flash);
    };

    [Fact]
    public void SelectedOnlyWhereTheDeviceListsTheShapeAndHasTheSharedMemory()
    {
        var caps = CooperativeMatrixSelectionTests.Caps(32, CooperativeMatrixSelectionTests.F16x16);
        Assert.Null(AttentionKernel.CoopMatrixUnavailable(caps));
        Assert.Contains("does not offer", AttentionKernel.CoopMatrixUnavailable(CooperativeMatrixSelectionTests.Caps(32)));
        Assert.Contains("lists no 16x16x16", AttentionKernel.CoopMatrixUnavailable(
            CooperativeMatrixSelectionTests.Caps(32, CooperativeMatrixSelectionTests.F16x16 with { AType = "Float32NV", BType = "Float32NV" })));
        Assert.Contains("32-wide subgroups", AttentionKernel.CoopMatrixUnavailable(CooperativeMatrixSelectionTests.Caps(64, CooperativeMatrixSelectionTests.F16x16)));
        Assert.Contains("shaderFloat16", AttentionKernel.CoopMatrixUnavailable(caps with { ShaderFloat16 = false }));
        // 40 KiB suffices for the fused 4-bit GEMM's tile but not for the attention variants.
        Assert.Null(QuantizedMatMul.CoopMatrixUnavailable(caps with { MaxComputeSharedMemorySize = 40960 }));
        Assert.Contains($"{AttentionKernel.CoopMatrixSharedBytes} bytes of shared memory",
            AttentionKernel.CoopMatrixUnavailable(caps with { MaxComputeSharedMemorySize = 40960 }));
        Assert.Null(AttentionKernel.CoopMatrixUnavailable(caps with { MaxComputeSharedMemorySize = AttentionKernel.CoopMatrixSharedBytes }));
    }

    [Fact]
    public void TheStatedSharedMemoryIsTheLargestVariantsAsTheSpirvDeclaresIt()
    {
        var bytes = ShaderCatalog.All.Where(s => s.Has("COOPMAT") && s.Source.StartsWith("attention_flash_", StringComparison.Ordinal))
            .Select(s => (s.Name, Bytes: SpirvReflection.Reflect(ShaderCatalog.LoadSpirv(s.Id)).WorkgroupBytes)).ToArray();
        Assert.Equal(3 * AttentionKernel.CoopMatrixHeadDims.Count, bytes.Length);
        Assert.All(bytes, b => Assert.True(b.Bytes > 0, b.Name));
        Assert.Equal(AttentionKernel.CoopMatrixSharedBytes, bytes.Max(b => b.Bytes));
        Assert.Equal("attention_flash_coopmat_bwd_dkv_d128", bytes.MaxBy(b => b.Bytes).Name);
    }

    [Fact]
    public void AutoKeepsThemOffHereAndAForcedRunSaysWhy()
    {
        var why = AttentionKernel.CoopMatrixUnavailable(Ctx.Caps);
        Assert.NotNull(why);   // lavapipe offers no VK_NV_cooperative_matrix
        var choice = Ctx.Kernels.Describe(AttentionKernel.CoopMatrix);
        Assert.Equal("fp32 flash", choice.Path);
        Assert.Equal(why, choice.Why);
        var c = AttentionKernel.SelfCheckCases[0];
        var e = Assert.Throws<ArgumentException>(() => AttentionKernel.RunForwardBackward(Ctx, c.Shape, c.Inputs(), AttentionAlgorithm.FlashCoopMatrix));
        Assert.Contains(why!, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void SafeKernelsForceFp32FlashWithoutChecking()
    {
        var kernel = AttentionKernel.CoopMatrix with { Unavailable = _ => null, SelfCheck = _ => throw new InvalidOperationException("must not run") };
        var paths = new KernelPaths(Ctx, safe: true, _ => Assert.Fail("no warning expected"));
        Assert.False(paths.Use(kernel));
        Assert.Equal("fp32 flash", paths.Describe(kernel).Path);
        Assert.Contains("--kernels safe", paths.Describe(kernel).Explain(VkPeft.Cli.SettingFlags.Spell));
    }

    /// <summary>The self-check's bounds pass a kernel that computes the same as the fp32 flash kernel.</summary>
    [Fact]
    public void AMatchingKernelPassesTheSelfCheckAndIsUsed()
    {
        Assert.Null(AttentionKernel.SelfCheck(Ctx, Fp32Flash, Fp32Flash, AttentionKernel.SelfCheckCases));
        var kernel = AttentionKernel.CoopMatrix with
        {
            Unavailable = _ => null,
            SelfCheck = c => AttentionKernel.SelfCheck(c, Fp32Flash, Fp32Flash, AttentionKernel.SelfCheckCases),
        };
        Assert.True(new KernelPaths(Ctx, safe: false, _ => Assert.Fail("no warning expected")).Use(kernel));
    }

    /// <summary>
    /// fp16 inputs without scaling pass the ordinary case (their rounding is within the fp16 terms of the bound) but not
    /// the range case: dO of 1e-6 lies in fp16's subnormals (spacing 6e-8), and 1e3-sized scores lose ~0.5 to rounding.
    /// </summary>
    [Fact]
    public void AnUnscaledFp16KernelIsCaughtByTheRangeCaseAndSwitchedOff()
    {
        Assert.Null(AttentionKernel.SelfCheck(Ctx, NaiveFp16, Fp32Flash, [AttentionKernel.SelfCheckCases[0]]));
        var mismatch = AttentionKernel.SelfCheck(Ctx, NaiveFp16, Fp32Flash, [AttentionKernel.SelfCheckCases[1]]);
        Assert.NotNull(mismatch);
        Assert.Contains("|q·k| up to 1024", mismatch);

        var kernel = AttentionKernel.CoopMatrix with
        {
            Unavailable = _ => null,
            SelfCheck = c => AttentionKernel.SelfCheck(c, NaiveFp16, Fp32Flash, AttentionKernel.SelfCheckCases),
        };
        var warnings = new List<string>();
        var paths = new KernelPaths(Ctx, safe: false, warnings.Add);
        Assert.False(paths.Use(kernel));
        var line = Assert.Single(warnings);
        Assert.Contains("disagrees with fp32 flash", line);
        Assert.DoesNotContain('\n', line);
        Assert.StartsWith("self-check against fp32 flash failed: ", paths.Describe(kernel).Why);
    }

    /// <summary>
    /// Each range fault alone is caught by the range case: tiny dO flushed to fp16 subnormals (the fp32 kernel on dO
    /// rounded to fp16), and scores held in fp16 (spacing 0.5 at 1e3; emulated on the CPU: float64 attention whose
    /// unscaled scores are rounded to fp16, gradients exact).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EachRangeProblemAloneFailsTheSelfCheck(bool fp16Scores)
    {
        AttentionKernel.SelfCheckRunner faulty = fp16Scores ? Fp16ScoresOnCpu : (c, s, t) =>
            AttentionKernel.RunForwardBackward(c, s, t with { DO = Array.ConvertAll(t.DO, v => (float)(Half)v) }, AttentionAlgorithm.Flash);
        var mismatch = AttentionKernel.SelfCheck(Ctx, faulty, Fp32Flash, [AttentionKernel.SelfCheckCases[1]]);
        Assert.NotNull(mismatch);
        Assert.StartsWith(fp16Scores ? "o " : "d", mismatch);
        if (fp16Scores)   // small scores (the ordinary case) hide it: only the range case catches it
            Assert.Null(AttentionKernel.SelfCheck(Ctx, Fp16ScoresOnCpu, Fp32Flash, [AttentionKernel.SelfCheckCases[0]]));
    }

    private static float[][] Fp16ScoresOnCpu(VulkanContext ctx, AttentionShape s, AttentionKernel.SelfCheckInputs t)
    {
        double[] D(float[] x) => Array.ConvertAll(x, v => (double)v);
        double[] q = D(t.Q), k = D(t.K), v = D(t.V);
        var o = new double[s.QCount];
        var lse = new double[s.LseCount];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < s.SeqLen; i++)
                {
                    int n = s.StartPos + i + 1, qb = (b * s.SeqLen + i) * s.Ldq + h * s.HeadDim;
                    var sc = new double[n];
                    for (int j = 0; j < n; j++)
                    {
                        int kb = (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;
                        double dot = 0;
                        for (int d = 0; d < s.HeadDim; d++) dot += q[qb + d] * k[kb + d];
                        sc[j] = (double)(Half)dot * s.Scale;
                    }
                    double m = sc.Max(), l = sc.Sum(x => Math.Exp(x - m));
                    lse[(b * s.NHeads + h) * s.SeqLen + i] = m + Math.Log(l);
                    for (int j = 0; j < n; j++)
                    {
                        int vb = (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;
                        for (int d = 0; d < s.HeadDim; d++) o[qb + d] += Math.Exp(sc[j] - m) / l * v[vb + d];
                    }
                }
        var (dq, dk, dv, _) = AttentionReference.Backward(q, k, v, D(t.DO), s);
        float[] F(double[] x) => Array.ConvertAll(x, y => (float)y);
        return [F(o), F(lse), F(dq), F(dk), F(dv)];
    }

    /// <summary>The cooperative-matrix bounds contain the fp32 ones and add the fp16 terms the header of AttentionTolerances states.</summary>
    [Fact]
    public void CoopMatrixBoundsAddTheFp16Terms()
    {
        var c = AttentionKernel.SelfCheckCases[0];
        var t = c.Inputs();
        double[] D(float[] x) => Array.ConvertAll(x, v => (double)v);
        var fp32 = AttentionTolerances.For(c.Shape, D(t.Q), D(t.K), D(t.V), D(t.DO));
        var coop = AttentionTolerances.For(c.Shape, D(t.Q), D(t.K), D(t.V), D(t.DO), coopMatrix: true);
        foreach (var (a, b) in new[] { (fp32.O, coop.O), (fp32.Dq, coop.Dq), (fp32.Dk, coop.Dk), (fp32.Dv, coop.Dv) })
            for (int i = 0; i < a.Length; i++)
                Assert.True(b[i] > a[i], $"element {i}: {b[i]} vs {a[i]}");
    }
}
