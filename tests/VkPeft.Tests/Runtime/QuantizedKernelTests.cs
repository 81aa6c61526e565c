// GPU-vs-CPU tests of the quantized-weight kernels: dequantize (bit-exact to quant/), the fused forward x·deq(W)ᵀ and
// the fused input gradient dy·deq(W), for every format, both algorithms, awkward shapes, guard regions; plus the
// golden NF4+DQ vectors on the device and the device bytes of a 4096x4096 NF4+DQ weight.
using System.Text.Json;
using VkPeft.Quant;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class QuantizedKernelTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    public static readonly string[] Formats = ["nf4", "nf4_dq", "fp4", "fp4_dq", "int4", "q4_0", "q4_1", "q8_0"];

    /// <summary>A quantized weight [n, k] of the format; GGUF formats need k to be a multiple of 32.</summary>
    internal static QuantizedLinearWeight Make(string format, int n, int k, int seed, int block = 64)
    {
        var w = TestData.Normal(n * k, seed, 0.05f);
        return format switch
        {
            "nf4" => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Nf4, block, doubleQuant: false),
            "nf4_dq" => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Nf4, block, doubleQuant: true),
            "fp4" => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Fp4, block, doubleQuant: false),
            "fp4_dq" => QuantizedLinearWeight.Bnb4Bit(w, n, k, QuantType.Fp4, block, doubleQuant: true),
            "int4" => QuantizedLinearWeight.Int4Group(w, n, k, 32),
            "q4_0" => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q4_0),
            "q4_1" => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q4_1),
            "q8_0" => QuantizedLinearWeight.Gguf(w, n, k, GgmlType.Q8_0),
            _ => throw new ArgumentException(format),
        };
    }

    private static bool IsGguf(string f) => f.StartsWith('q');

    public static TheoryData<string, int, int> DequantCases()
    {
        var d = new TheoryData<string, int, int>();
        foreach (var f in Formats)
        {
            // Element counts off the block (64), nested block (256·64) and workgroup (256) boundaries.
            d.Add(f, 7, IsGguf(f) ? 96 : 172);
            d.Add(f, 300, IsGguf(f) ? 64 : 65);
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(DequantCases))]
    public void DequantizeIsBitExactToTheCodec(string format, int n, int k)
    {
        var q = Make(format, n, k, n + k);
        using var w = DeviceQuantizedWeight.Upload(Ctx, "w", q);
        using var o = Guarded.Create(Ctx, "deq", n, k);
        QuantizedMatMul.Dequantize(w, o.Tensor);
        // Same formulas in the same fp32 order (rounding after the multiply and after the add, as the codec does).
        Assert.Equal(q.Dequantize(), o.Download());
    }

    public static TheoryData<string, int, int, int, MatMulAlgorithm> MatmulCases()
    {
        var d = new TheoryData<string, int, int, int, MatMulAlgorithm>();
        foreach (var f in Formats)
        {
            foreach (var alg in new[] { MatMulAlgorithm.SharedTiles, MatMulAlgorithm.Lanes })
            {
                d.Add(f, 1, 33, IsGguf(f) ? 64 : 128, alg);     // generation: one token; word path for nibble formats
                d.Add(f, 67, 17, IsGguf(f) ? 96 : 172, alg);    // K not a multiple of 8 or of the block
                d.Add(f, 3, 70, 256, alg);
                d.Add(f, 20, 24, 128, alg);                     // 16-row word tiles
                d.Add(f, 600, 9, IsGguf(f) ? 64 : 192, alg);    // 32-row word tiles, a partial last tile
            }
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(MatmulCases))]
    public void FusedForwardAndInputGradientMatchCpu(string format, int m, int n, int k, MatMulAlgorithm algorithm) =>
        // The device decodes exactly the codec's values (previous test), so only fp32 summation error remains: γ_K bound.
        CheckForwardAndInputGrad(format, m, n, k, $"{format} {algorithm}", 0,
            (x, w, y) => QuantizedMatMul.Forward(x, w, y, algorithm: algorithm, fp16Tiles: false),
            (dy, w, dx) => QuantizedMatMul.InputGrad(dy, w, dx, algorithm: algorithm, fp16Tiles: false));

    /// <summary>
    /// Runs a fused forward and input gradient on a weight of the format (guard regions around every output) and checks
    /// both against the float64 CPU product of the dequantized weight within the fp32 bound, widened by
    /// <paramref name="rounding"/> (relative rounding of the weight tile) where the kernel stores weights in fp16.
    /// </summary>
    private void CheckForwardAndInputGrad(string format, int m, int n, int k, string what, double rounding,
        Action<DeviceTensor, DeviceQuantizedWeight, DeviceTensor> forward, Action<DeviceTensor, DeviceQuantizedWeight, DeviceTensor> inputGrad)
    {
        var q = Make(format, n, k, m * 7 + n);
        var deq = q.Dequantize();
        using var w = DeviceQuantizedWeight.Upload(Ctx, "w", q);
        var x = TestData.Uniform(m * k, m + 1);
        using var tx = Guarded.Create(Ctx, "x", m, k);
        using var ty = Guarded.Create(Ctx, "y", m, n);
        tx.Upload(x);
        forward(tx.Tensor, w, ty.Tensor);
        var (expected, abs) = CpuReference.MatMul(x, deq, m, n, k, transposeB: true);
        MatMulTests.AssertWithinFp32Bound(expected, abs, ty.Download(), k, $"{what} forward", rounding);

        var dy = TestData.Uniform(m * n, m + 2);
        using var tdy = Guarded.Create(Ctx, "dy", m, n);
        using var tdx = Guarded.Create(Ctx, "dx", m, k);
        tdy.Upload(dy);
        inputGrad(tdy.Tensor, w, tdx.Tensor);
        var (gExpected, gAbs) = CpuReference.MatMul(dy, deq, m, k, n, transposeB: false);
        MatMulTests.AssertWithinFp32Bound(gExpected, gAbs, tdx.Download(), n, $"{what} input gradient", rounding);
    }

    /// <summary>
    /// Shared-tiles path with explicit tile shapes and tile types: every format, shapes where K (forward) and N (input
    /// gradient) are multiples of the decode chunk (word path: each code word decoded once per tile) and where they are
    /// not (element path), M = 1, 3, 67, 600, odd N; table entry and fp16/fp32 tile rotate over the cases.
    /// </summary>
    public static TheoryData<string, int, int, int, int, bool> TileCases()
    {
        var d = new TheoryData<string, int, int, int, int, bool>();
        (int M, int N, int K)[] shapes = [(1, 33, 128), (3, 17, 172), (67, 9, 192), (600, 5, 96)];
        for (int f = 0; f < Formats.Length; f++)
            for (int s = 0; s < shapes.Length; s++)
            {
                var (m, n, k) = shapes[s];
                if (IsGguf(Formats[f]) && k % 32 != 0) k = 96;
                d.Add(Formats[f], m, n, k, (f + s) % MatMulTiles.Table.Length, (f + s) % 2 == 0);
            }
        return d;
    }

    [Theory]
    [MemberData(nameof(TileCases))]
    public void SharedTilesMatchCpuForEveryTileShapeAndTileType(string format, int m, int n, int k, int table, bool fp16)
    {
        var tiles = MatMulTiles.Table[table];
        if (fp16 && !Ctx.Caps.ShaderFloat16 || !MatMulTiles.Fits(tiles, Ctx.Caps, fp16))
        {
            // What this device cannot run is refused up front with a clear error (never a driver fault).
            var q0 = Make(format, n, k, 1);
            using var w0 = DeviceQuantizedWeight.Upload(Ctx, "w", q0);
            using var x0 = DeviceTensor.Create(Ctx, "x", DType.F32, [m, k], MemoryCategory.Workspace);
            using var y0 = DeviceTensor.Create(Ctx, "y", DType.F32, [m, n], MemoryCategory.Workspace);
            Assert.Throws<ArgumentException>(() => QuantizedMatMul.Forward(x0, w0, y0, algorithm: MatMulAlgorithm.SharedTiles, tiles: tiles, fp16Tiles: fp16));
            return;
        }
        // fp32 tiles: only fp32 summation error (γ_K); fp16 tiles also round each decoded weight by ≤ 2⁻¹¹ relative.
        CheckForwardAndInputGrad(format, m, n, k, $"{format} {tiles.Name} fp16={fp16}", fp16 ? 1.0 / 2048 : 0,
            (x, w, y) => QuantizedMatMul.Forward(x, w, y, algorithm: MatMulAlgorithm.SharedTiles, tiles: tiles, fp16Tiles: fp16),
            (dy, w, dx) => QuantizedMatMul.InputGrad(dy, w, dx, algorithm: MatMulAlgorithm.SharedTiles, tiles: tiles, fp16Tiles: fp16));
    }

    [Fact]
    public void TheTestDeviceRunsFp16TilesAndAtLeastTwoTileShapes()
    {
        // The rotating cases above only prove the fp16 and multi-shape paths where the device can run them: lavapipe can.
        Assert.True(Ctx.Caps.ShaderFloat16, "the test device should offer shaderFloat16");
        Assert.True(MatMulTiles.Table.Count(t => MatMulTiles.Fits(t, Ctx.Caps, true)) >= 2);
    }

    [Theory]
    [InlineData("nf4_dq")]
    [InlineData("fp4")]
    [InlineData("q8_0")]
    public void QuantizedEmbeddingGathersDequantizedRows(string format)
    {
        const int vocab = 37, dim = 96;
        var q = Make(format, vocab, dim, 5);
        var deq = q.Dequantize();
        using var table = DeviceQuantizedWeight.Upload(Ctx, "embedding", q);
        int[] ids = [0, 36, 5, 5, -1, 37, 12];
        using var tIds = DeviceTensor.Create(Ctx, "ids", DType.I32, [ids.Length], MemoryCategory.Workspace);
        tIds.Upload<int>(ids);
        using var o = Guarded.Create(Ctx, "rows", ids.Length, dim);
        QuantizedMatMul.Embed(table, tIds, o.Tensor);
        var got = o.Download();
        for (int t = 0; t < ids.Length; t++)
            for (int j = 0; j < dim; j++)
            {
                float expected = ids[t] is >= 0 and < vocab ? deq[ids[t] * dim + j] : 0f;   // out-of-range ids give zero rows
                Assert.Equal(expected, got[t * dim + j]);
            }
    }

    [Fact]
    public void GoldenNf4DqVectorsDequantizeExactlyOnTheDevice()
    {
        // The reference vectors' inputs, dequantized under bitsandbytes' float32 double quantization (its published map
        // and torch's mean; QuantTestData.BnbSemanticsDequantized), bit for bit on the device.
        using var doc = JsonDocument.Parse(File.ReadAllText(SharedData.Fixture("nf4_golden.json")));
        for (int caseIndex = 0; caseIndex < 2; caseIndex++)
        {
            var c = doc.RootElement.GetProperty("cases")[caseIndex];
            int[] shape = [.. c.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
            float[] input = [.. c.GetProperty("input_f32").EnumerateArray().Select(e => (float)e.GetDouble())];
            float[] golden = Quant.QuantTestData.BnbSemanticsDequantized(caseIndex);
            var q = QuantizedLinearWeight.Bnb4Bit(input, shape[0], shape[1]);
            Assert.Equal(c.GetProperty("packed_hex").GetString(), Convert.ToHexStringLower(q.Data));
            using var w = DeviceQuantizedWeight.Upload(Ctx, "golden", q);
            using var o = DeviceTensor.Create(Ctx, "deq", DType.F32, [input.Length], MemoryCategory.Workspace);
            QuantizedMatMul.Dequantize(w, o);
            Assert.Equal(golden, o.ToArray<float>());
        }
    }

    [Fact]
    public void Nf4DqWeightOf4096SquaredCosts4127BitsPerParameterOnTheDevice()
    {
        const int n = 4096;
        var q = QuantizedLinearWeight.Bnb4Bit(TestData.Normal(n * n, 9, 0.02f), n, n);
        long before = Ctx.Arena.Accounting.Current(MemoryCategory.Weights);
        using var w = DeviceQuantizedWeight.Upload(Ctx, "w4096", q);
        long charged = Ctx.Arena.Accounting.Current(MemoryCategory.Weights) - before;
        // n·4 + nblocks·8 + nnested·32 bits + the 4-byte offset (push constant) — the dynamic map (1 KiB, shared by all
        // weights) may be charged once per context, which is why "within a few hundred bytes" excludes it here.
        long expectedBits = (long)n * n * 4 + (long)n * n / 64 * 8 + (n * n / 64 + 255) / 256 * 32;
        Assert.InRange(w.DeviceBytes, expectedBits / 8, expectedBits / 8 + 16);
        Assert.InRange(charged, expectedBits / 8 - 4, expectedBits / 8 + 16);
        Assert.InRange(w.BitsPerParam, 4.1269, 4.1271);
    }
}

/// <summary>Quantizing on the device reproduces the CPU codec byte for byte, also for a weight split across bindings.</summary>
public sealed class DeviceQuantizerTests : IDisposable
{
    private readonly VulkanContext _ctx = new(SplitDeviceTests.SplitOptions());

    public void Dispose() => _ctx.Dispose();

    [Theory]
    [InlineData(QuantType.Nf4, 64, true, 7, 172)]      // partial last block, blocks spanning rows
    [InlineData(QuantType.Nf4, 64, true, 300, 128)]    // 150 KB fp32: split into segments
    [InlineData(QuantType.Fp4, 32, false, 33, 96)]
    [InlineData(QuantType.Nf4, 256, false, 5, 257)]    // odd element count
    public void MatchesCpuCodecBytes(QuantType type, int block, bool dq, int n, int k)
    {
        var w = TestData.Normal(n * k, n + k, 0.05f);
        w[3] = 0; // exact zero and a zero run
        using var t = DeviceTensor.Create(_ctx, "w", DType.F32, [n, k], MemoryCategory.Workspace);
        t.Upload<float>(w);
        using var q = DeviceQuantizer.Quantize4Bit(t, type, block, dq, "w");
        var cpu = QuantizedLinearWeight.Bnb4Bit(w, n, k, type, block, dq);
        var codes = q.Codes.ToArray<byte>().AsSpan(0, cpu.Data.Length).ToArray();
        Assert.Equal(Convert.ToHexString(cpu.Data), Convert.ToHexString(codes));
        if (dq)
        {
            Assert.Equal(cpu.QuantizedAbsmax!.Codes, q.Scale!.ToArray<byte>().AsSpan(0, cpu.QuantizedAbsmax.Codes.Length).ToArray());
            Assert.Equal(cpu.QuantizedAbsmax.NestedAbsmax, q.Aux!.ToArray<float>());
            Assert.Equal(cpu.QuantizedAbsmax.Offset, q.DqOffset);
        }
        else Assert.Equal(cpu.Absmax, q.Scale!.ToArray<float>());
        using var deq = DeviceTensor.Create(_ctx, "deq", DType.F32, [n, k], MemoryCategory.Workspace);
        QuantizedMatMul.Dequantize(q, deq);
        Assert.Equal(cpu.Dequantize(), deq.ToArray<float>());
    }

    [Fact]
    public void CodesLargerThanOneBindingAreAClearError()
    {
        // [1100, 128]: 70 KB of 4-bit codes over this context's 64 KiB bindings (the fp32 source itself is split).
        using var t = DeviceTensor.Create(_ctx, "w", DType.F32, [1100, 128], MemoryCategory.Workspace);
        t.Upload<float>(TestData.Normal(1100 * 128, 2));
        var e = Assert.Throws<VulkanUnsupportedException>(() => DeviceQuantizer.Quantize4Bit(t, QuantType.Nf4, 64, true, "embedding"));
        Assert.Contains("embedding", e.Message);
        Assert.Contains("largest storage binding", e.Message);
        Assert.Contains("(for an embedding: --quant-embeddings none)", VkPeft.Cli.CliApp.UserError(e), StringComparison.Ordinal);
    }

    [Fact]
    public void NaNInWeightIsAClearError()
    {
        var w = TestData.Normal(64 * 3, 1);
        w[100] = float.NaN;
        using var t = DeviceTensor.Create(_ctx, "w", DType.F32, [3, 64], MemoryCategory.Workspace);
        t.Upload<float>(w);
        var e = Assert.Throws<ArgumentException>(() => DeviceQuantizer.Quantize4Bit(t, QuantType.Nf4, 64, true, "layers.0.wq"));
        Assert.Contains("layers.0.wq", e.Message);
        Assert.Contains("block 1", e.Message);
    }
}
