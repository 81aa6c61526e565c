// Kernel-path selection and the first-use self-check: availability from a capabilities record, a deliberately wrong
// fast kernel switched off with one warning, --kernels safe forcing the reference, the real fp16-tile check on this
// device, and the fused 4-bit matmul following the decision.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class KernelPathsTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    /// <summary>
    /// A matmul self-check: C = A·Bᵀ by the reference call and by the "fast" one on 5 x 7 x 9 (B square-free, so a
    /// transposed read is wrong); null when they agree bit for bit (same kernel, same order).
    /// </summary>
    private static string? CompareMatmuls(VulkanContext ctx, bool wrong, ref int calls)
    {
        calls++;
        const int m = 5, n = 7, k = 9;
        using var a = DeviceTensor.Create(ctx, "a", DType.F32, [m, k], MemoryCategory.Workspace);
        using var b = DeviceTensor.Create(ctx, "b", DType.F32, [n, k], MemoryCategory.Workspace);
        using var bt = DeviceTensor.Create(ctx, "bt", DType.F32, [k, n], MemoryCategory.Workspace);
        using var fast = DeviceTensor.Create(ctx, "fast", DType.F32, [m, n], MemoryCategory.Workspace);
        using var reference = DeviceTensor.Create(ctx, "ref", DType.F32, [m, n], MemoryCategory.Workspace);
        var bv = TestData.Uniform(n * k, 2);
        a.Upload<float>(TestData.Uniform(m * k, 1));
        b.Upload<float>(bv);
        bt.Upload<float>(bv);   // the same numbers read as [k, n]: the deliberately wrong layout
        MatMul.Run(a, b, reference, transposeB: true);
        if (wrong) MatMul.Run(a, bt, fast, transposeB: false);
        else MatMul.Run(a, b, fast, transposeB: true);
        var f = fast.ToArray<float>();
        var r = reference.ToArray<float>();
        for (int i = 0; i < f.Length; i++)
            if (f[i] != r[i]) return $"element {i}: {f[i]} vs {r[i]}";
        return null;
    }

    [Fact]
    public void AWrongFastKernelIsSwitchedOffWithOneWarningAndTheReferenceRuns()
    {
        int calls = 0;
        var kernel = new FastKernel("test op", "wrong fast kernel", "fp32 reference", _ => null, c => CompareMatmuls(c, wrong: true, ref calls));
        var warnings = new List<string>();
        var paths = new KernelPaths(Ctx, safe: false, warnings.Add);
        Assert.False(paths.Use(kernel));
        Assert.False(paths.Use(kernel));
        Assert.Equal(1, calls);                       // checked once per device, on first use
        var line = Assert.Single(warnings);
        Assert.Contains("wrong fast kernel disagrees with fp32 reference", line);
        Assert.DoesNotContain('\n', line);
        var choice = paths.Describe(kernel);
        Assert.Equal("fp32 reference", choice.Path);
        Assert.StartsWith("self-check against fp32 reference failed: element", choice.Why);
    }

    [Fact]
    public void AMatchingFastKernelIsUsedSilently()
    {
        int calls = 0;
        var kernel = new FastKernel("test op", "fast kernel", "fp32 reference", _ => null, c => CompareMatmuls(c, wrong: false, ref calls));
        var warnings = new List<string>();
        var paths = new KernelPaths(Ctx, safe: false, warnings.Add);
        Assert.True(paths.Use(kernel));
        Assert.Equal("fast kernel", paths.Describe(kernel).Path);
        Assert.Empty(warnings);
        Assert.Equal(1, calls);
    }

    [Fact]
    public void ASelfCheckThatThrowsCountsAsAMismatch()
    {
        var kernel = new FastKernel("test op", "fast kernel", "fp32 reference", _ => null, _ => throw new InvalidOperationException("pipeline failed"));
        var warnings = new List<string>();
        Assert.False(new KernelPaths(Ctx, safe: false, warnings.Add).Use(kernel));
        Assert.Contains("pipeline failed", Assert.Single(warnings));
    }

    [Fact]
    public void SafeKernelsAndMissingFeaturesSelectTheReferenceWithoutChecking()
    {
        int calls = 0;
        var kernel = new FastKernel("test op", "fast kernel", "fp32 reference", caps => caps.ShaderFloat16 ? null : "the device lacks shaderFloat16",
            c => CompareMatmuls(c, wrong: false, ref calls));
        var safe = new KernelPaths(Ctx, safe: true, _ => Assert.Fail("no warning expected"));
        Assert.False(safe.Use(kernel));
        Assert.Contains("--kernels safe", safe.Describe(kernel).Explain(VkPeft.Cli.SettingFlags.Spell));
        Assert.Equal(0, calls);

        // Availability is a function of the capabilities record alone.
        Assert.Equal("the device lacks shaderFloat16", QuantizedMatMul.Fp16Tiles.Unavailable(Ctx.Caps with { ShaderFloat16 = false }));
        Assert.Null(QuantizedMatMul.Fp16Tiles.Unavailable(Ctx.Caps with { ShaderFloat16 = true }));
    }

    [Fact]
    public void Fp16TilesPassTheirSelfCheckHereAndSafeKernelsRunFp32Tiles()
    {
        Assert.Null(QuantizedMatMul.Fp16Tiles.SelfCheck(Ctx));
        Assert.True(new KernelPaths(Ctx, safe: false, _ => Assert.Fail("no warning expected")).Use(QuantizedMatMul.Fp16Tiles));

        // With --kernels safe the default shared-tiles path is fp32: it meets the fp32-only bound (fp16 weight tiles
        // would not: their rounding is ~2⁻¹¹ relative, far above γ_K).
        using var safeCtx = new VulkanContext(GpuFixture.Options() with { SafeKernels = true });
        const int m = 9, n = 40, k = 128;
        var q = QuantizedKernelTests.Make("nf4_dq", n, k, 3);
        using var w = DeviceQuantizedWeight.Upload(safeCtx, "w", q);
        var x = TestData.Uniform(m * k, 4);
        using var tx = DeviceTensor.Create(safeCtx, "x", DType.F32, [m, k], MemoryCategory.Workspace);
        using var ty = DeviceTensor.Create(safeCtx, "y", DType.F32, [m, n], MemoryCategory.Workspace);
        tx.Upload<float>(x);
        QuantizedMatMul.Forward(tx, w, ty, algorithm: MatMulAlgorithm.SharedTiles);
        var (expected, abs) = CpuReference.MatMul(x, q.Dequantize(), m, n, k, transposeB: true);
        MatMulTests.AssertWithinFp32Bound(expected, abs, ty.ToArray<float>(), k, "safe kernels forward");
        Assert.Equal("fp32 tiles", safeCtx.Kernels.Describe(QuantizedMatMul.Fp16Tiles).Path);
    }

    /// <summary>
    /// A deliberately underflowing "fast" kernel: the fp32 tiles fed A rounded to fp16 first, as the cooperative-matrix
    /// input gradient rounds dy. At unit scale it meets the fp16 bound; only the tiny-gradient case catches it.
    /// </summary>
    private static void Fp16RoundedA(DeviceTensor a, DeviceQuantizedWeight w, DeviceTensor c, bool forward)
    {
        var rounded = a.ToArray<float>().Select(v => (float)(Half)v).ToArray();
        using var ta = DeviceTensor.Create(a.Context, "rounded", DType.F32, a.Shape, MemoryCategory.Workspace);
        ta.Upload<float>(rounded);
        if (forward) QuantizedMatMul.Forward(ta, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: false, coopMatrix: false);
        else QuantizedMatMul.InputGrad(ta, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: false, coopMatrix: false);
    }

    [Fact]
    public void AnInputGradientThatFlushesTinyGradientsToZeroFailsItsSelfCheckAndFallsBack()
    {
        // Unit-scale gradients alone would not notice: the rounded kernel is within the fp16 bound there.
        Assert.Null(QuantizedMatMul.SelfCheckAgainstFp32Tiles(Ctx, Fp16RoundedA, forward: true, inputGrad: false, aInFp16: true));
        Assert.True(Math.Abs((float)(Half)(float)QuantizedMatMul.TinyGradientScale) == 0f, "the tiny scale flushes to zero in fp16");

        // The capabilities record offers the variant; the self-check (with its tiny-gradient case) switches it off.
        var kernel = new FastKernel("fused 4-bit matmul input gradient (shared tiles)", "fp16-rounded dy", "fp32 tiles", _ => null,
            c => QuantizedMatMul.SelfCheckAgainstFp32Tiles(c, Fp16RoundedA, forward: false, inputGrad: true, aInFp16: true));
        var warnings = new List<string>();
        var paths = new KernelPaths(Ctx, safe: false, warnings.Add);
        Assert.False(paths.Use(kernel));
        var line = Assert.Single(warnings);
        Assert.Contains("input gradient [67x33x96] at |a| ≤ 7.5e-9", line);
        Assert.Equal("fp32 tiles", paths.Describe(kernel).Path);

        // The real fp16 weight tiles keep dy in fp32: they pass the same tiny-gradient case.
        Assert.Null(QuantizedMatMul.SelfCheckAgainstFp32Tiles(Ctx, (a, w, c, fwd) =>
        {
            if (fwd) QuantizedMatMul.Forward(a, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: true, coopMatrix: false);
            else QuantizedMatMul.InputGrad(a, w, c, algorithm: MatMulAlgorithm.SharedTiles, fp16Tiles: true, coopMatrix: false);
        }, forward: false, inputGrad: true, aInFp16: false));
    }

    [Fact]
    public void TheCooperativeMatrixForwardAndInputGradientAreDecidedSeparately()
    {
        Assert.NotSame(QuantizedMatMul.CoopMatrix, QuantizedMatMul.CoopMatrixInputGrad);
        Assert.Contains("forward", QuantizedMatMul.CoopMatrix.Op);
        Assert.Contains("input gradient", QuantizedMatMul.CoopMatrixInputGrad.Op);
        // lavapipe offers no VK_NV_cooperative_matrix: both stay on the reference without a self-check or a warning.
        var paths = new KernelPaths(Ctx, safe: false, _ => Assert.Fail("no warning expected"));
        Assert.False(paths.Use(QuantizedMatMul.CoopMatrix));
        Assert.False(paths.Use(QuantizedMatMul.CoopMatrixInputGrad));
        Assert.Contains("VK_NV_cooperative_matrix", paths.Describe(QuantizedMatMul.CoopMatrixInputGrad).Why);
    }

    [Fact]
    public void TheReportNamesEveryOpsPathAndWhy()
    {
        var report = KernelPathReport.Describe(Ctx);
        Assert.Equal(["matmul fp32", "fused 4-bit matmul", "fused 4-bit matmul weight tiles", "cooperative matrices (forward)", "cooperative matrices (input gradient)",
            "attention", "attention cooperative matrices"],
            report.Select(r => r.Op));
        Assert.All(report, r => Assert.False(string.IsNullOrWhiteSpace(r.Path + r.Why)));
        bool lanes = MatMul.Choose(Ctx) == MatMulAlgorithm.Lanes;
        Assert.Equal(lanes, report[0].Path.StartsWith("lanes", StringComparison.Ordinal));
        Assert.All(report.Skip(3).Where(r => r.Op.Contains("cooperative", StringComparison.Ordinal)), r => Assert.Contains("GL_KHR_cooperative_matrix", r.Why));
        Assert.Contains(Ctx.Caps.Kind.ToString(), report[5].Why);
        if (VkPeft.Runtime.Kernels.Attention.CoopMatrixUnavailable(Ctx.Caps) is { } why)
        {
            Assert.Equal("not used", report[6].Path);
            Assert.StartsWith(why, report[6].Why);
        }
    }
}

/// <summary>Cooperative-matrix variants: compiled (and spirv-val'd) in the build, selected only where the device lists their shape.</summary>
public sealed class CooperativeMatrixSelectionTests
{
    internal static DeviceCapabilities Caps(uint subgroup, params CooperativeMatrixShape[] shapes) => new()
    {
        Name = "test", Kind = DeviceKind.DiscreteGpu, VendorId = 0x10de, DeviceId = 1, ApiVersion = "1.3", DriverName = "d", DriverInfo = "i",
        MaxStorageBufferRange = 1u << 30, MaxMemoryAllocationSize = 1u << 30, MaxBufferSize = 1u << 30,
        MaxComputeWorkGroupCount = [65535, 65535, 65535], MaxComputeWorkGroupSize = [1024, 1024, 64], MaxComputeWorkGroupInvocations = 1024,
        MaxComputeSharedMemorySize = 49152, MinStorageBufferOffsetAlignment = 16, MaxPushConstantsSize = 256, MaxPerStageStorageBuffers = 16,
        SubgroupSize = subgroup, SubgroupArithmetic = true, SubgroupShuffle = true, SubgroupBallot = true, ShaderFloat16 = true, ShaderInt8 = true,
        StorageBuffer8Bit = true, StorageBuffer16Bit = true, BufferDeviceAddress = true, TimestampsSupported = true, TimestampPeriodNs = 1,
        MemoryBudgetExtension = true, UnifiedMemory = false, Heaps = [], CooperativeMatricesNV = shapes,
    };

    internal static readonly CooperativeMatrixShape F16x16 = new(16, 16, 16, "Float16NV", "Float16NV", "Float32NV", "Float32NV", "SubgroupNV");

    [Fact]
    public void SelectedOnlyWhereTheDeviceListsTheShape()
    {
        Assert.Null(QuantizedMatMul.CoopMatrixUnavailable(Caps(32, F16x16)));
        Assert.Contains("does not offer", QuantizedMatMul.CoopMatrixUnavailable(Caps(32)));
        Assert.Contains("lists no 16x16x16", QuantizedMatMul.CoopMatrixUnavailable(Caps(32, F16x16 with { CType = "Float16NV", DType = "Float16NV" })));
        Assert.Contains("lists no 16x16x16", QuantizedMatMul.CoopMatrixUnavailable(Caps(32, F16x16 with { K = 8 })));
        Assert.Contains("32-wide subgroups", QuantizedMatMul.CoopMatrixUnavailable(Caps(64, F16x16)));
        Assert.Contains("shared memory", QuantizedMatMul.CoopMatrixUnavailable(Caps(32, F16x16) with { MaxComputeSharedMemorySize = 16384 }));
        Assert.Contains("shaderFloat16", QuantizedMatMul.CoopMatrixUnavailable(Caps(32, F16x16) with { ShaderFloat16 = false }));
    }

    [Fact]
    public void TheVariantsAreCompiledForEveryFormatWithTheCooperativeMatrixCapability()
    {
        var variants = ShaderCatalog.All.Where(s => s.Has("COOPMAT")).ToArray();
        Assert.Equal(8 + 5, variants.Count(v => v.Source == "matmul.comp"));
        Assert.Equal(3 * VkPeft.Runtime.Kernels.Attention.CoopMatrixHeadDims.Count, variants.Count(v => v.Source.StartsWith("attention_flash_", StringComparison.Ordinal)));
        foreach (var v in variants)
        {
            var words = ShaderCatalog.LoadSpirv(v.Id);
            // OpCapability (opcode 17, 2 words) CooperativeMatrixNV (5357) in the module header section.
            bool found = false;
            for (int i = 20; i + 8 <= words.Length && !found; i += 4)
                found = BitConverter.ToUInt32(words, i) == (2u << 16 | 17u) && BitConverter.ToUInt32(words, i + 4) == 5357u;
            Assert.True(found, $"{v.Name} lacks OpCapability CooperativeMatrixNV");
        }
    }
}
