// Double quantization of absmax statistics: bitsandbytes' float32 dynamic map, torch's float32 mean order, error bound,
// partial 256-blocks, a checkpoint's own map, degenerate inputs.
using VkPeft.Quant;

namespace VkPeft.Tests.Quant;

public class DoubleQuantTests
{
    [Fact]
    public void DynamicMapHasTheDocumentedLandmarks()
    {
        var map = DynamicMap.Signed;
        Assert.Equal(256, map.Length);
        Assert.Equal(-0.99296875f, map[0]);
        Assert.Equal(-5.5e-7f, map[126], 1e-12f);
        Assert.Equal(0f, map[127]);
        Assert.Equal(5.5e-7f, map[128], 1e-12f);
        Assert.Equal(0.99296875f, map[254]);
        Assert.Equal(1f, map[255]);
        for (int k = 0; k < 255; k++) Assert.True(map[k] < map[k + 1], $"map not ascending at {k}");
    }

    [Fact]
    public void MapQuantizerPicksNearestAndLowerOnTies()
    {
        var map = DynamicMap.Signed;
        for (int k = 0; k < 256; k++) Assert.Equal(k, DynamicMap.Quantize(map[k]));
        float midpoint = (map[200] + map[201]) * 0.5f;
        Assert.Equal(200, DynamicMap.Quantize(midpoint));
        Assert.Equal(201, DynamicMap.Quantize(MathF.BitIncrement(midpoint)));
        Assert.Equal(0, DynamicMap.Quantize(-1f));
        Assert.Equal(127, DynamicMap.Quantize(1e-8f));
    }

    [Fact]
    public void ReconstructionErrorIsBoundedByHalfTheWidestMapGap()
    {
        var random = new Random(11);
        float[] absmax = [.. Enumerable.Range(0, 1000).Select(_ => (float)(0.5 + 3 * random.NextDouble()))];
        var dq = DoubleQuant.Quantize(absmax);
        float[] restored = DoubleQuant.Dequantize(dq);
        const float halfWidestGap = 0.9f / 64 / 2;     // i = 6 decade: 64 means of linspace(0.1, 1, 65)
        for (int i = 0; i < absmax.Length; i++)
        {
            float bound = halfWidestGap * dq.NestedAbsmax[i / 256] * 1.001f;
            Assert.True(Math.Abs(absmax[i] - restored[i]) <= bound, $"absmax[{i}] = {absmax[i]} restored as {restored[i]}");
        }
    }

    [Fact]
    public void PartialLastNestedBlockHasItsOwnAbsmax()
    {
        float[] absmax = [.. Enumerable.Repeat(1f, 256), 5f];   // 257 values: the last nested block holds one value
        var dq = DoubleQuant.Quantize(absmax);
        Assert.Equal(2, dq.NestedAbsmax.Length);
        float offset = dq.Offset;
        Assert.Equal(5f - offset, dq.NestedAbsmax[1]);
        Assert.Equal(255, dq.Codes[256]);                        // (5 − offset) / nested = 1 → map entry 1.0
        Assert.Equal(5f, DoubleQuant.Dequantize(dq)[256], 1e-6f);
    }

    [Fact]
    public void EqualAbsmaxValuesGiveZeroNestedAbsmaxAndExactReconstruction()
    {
        float[] absmax = [.. Enumerable.Repeat(0.25f, 70)];
        var dq = DoubleQuant.Quantize(absmax);
        Assert.Equal(0.25f, dq.Offset);
        Assert.Equal(new[] { 0f }, dq.NestedAbsmax);
        Assert.All(dq.Codes, c => Assert.Equal(127, c));
        Assert.All(DoubleQuant.Dequantize(dq), v => Assert.Equal(0.25f, v));
    }

    [Fact]
    public void DynamicMapIsBitsandbytesFloat32TableBitForBit() =>
        QuantTestData.BitEqual(QuantTestData.BnbDynamicMap, DynamicMap.Signed, "dynamic map vs Fixtures/bnb_dynamic_map.txt");

    [Fact]
    public void TorchLinspaceFusesEachElementsMultiplyAdd()
    {
        // linspace(0.1, 1, 65): step = 0.9f / 64; element 6 (first half) is fma(step, 6, 0.1f), element 46 (second half)
        // fma(-step, 18, 1f) — one rounding each (the double expressions below are exact before the cast). For these
        // two (and 10 more) the separately rounded product gives another float, so the test tells fused from unfused.
        float step = (1f - 0.1f) / 64;
        float[] boundaries = DynamicMap.TorchLinspace(0.1f, 1f, 65);
        Assert.Equal(65, boundaries.Length);
        Assert.Equal(0.1f, boundaries[0]);
        Assert.Equal(1f, boundaries[64]);
        Assert.Equal((float)((double)step * 6 + 0.1f), boundaries[6]);
        Assert.Equal((float)(1f - (double)step * 18), boundaries[46]);
        Assert.NotEqual(0.1f + step * 6, boundaries[6]);
        Assert.NotEqual(1f - step * 18, boundaries[46]);
        int unfusedDiffers = 0;
        for (int idx = 0; idx < 65; idx++)
        {
            float unfused = idx < 32 ? 0.1f + step * idx : 1f - step * (64 - idx);
            if (unfused != boundaries[idx]) unfusedDiffers++;
        }
        Assert.Equal(12, unfusedDiffers);   // elements 6 12 18 23 24 30 33 36 38 41 43 46
        Assert.Throws<ArgumentOutOfRangeException>(() => DynamicMap.TorchLinspace(0f, 1f, 1));
    }

    /// <summary>
    /// torch's CPU float32 sum (cascade_sum, one thread, AVX2) of a seeded input, as a C program following
    /// SumKernel.cpp's loops literally computed it: (n, sum bits). The sizes exercise each branch and level: n &lt; 8
    /// (scalar, no row / one row of 4), 8..31 (vectors, no 4-vector row), 32..511 (rows, level 0 only), 512..8191 (level
    /// 1 carries: 16 rows), 8192..131071 (level 2: 256 rows), ≥ 131072 (level 3: 4,096 rows); ±1 around each edge.
    /// </summary>
    public static TheoryData<int, uint> TorchSumGolden => new()
    {
        { 3, 0x3f15545c }, { 7, 0x3f7dd300 }, { 8, 0x3f82b264 }, { 9, 0x3f70aad2 }, { 31, 0x407319e8 }, { 32, 0x405e83b9 },
        { 33, 0x4074410b }, { 100, 0x414caf8e }, { 511, 0x4285f523 }, { 512, 0x42843f84 }, { 513, 0x427f3678 },
        { 4095, 0x440120ab }, { 8191, 0x448088b5 }, { 8192, 0x44826284 }, { 8193, 0x4480bf16 }, { 20000, 0x451d8b6c },
        { 131071, 0x4681253e }, { 131072, 0x46813b84 }, { 131073, 0x4680bb23 }, { 140001, 0x4689d5d3 },
    };

    [Theory]
    [MemberData(nameof(TorchSumGolden))]
    public void MeanSumsInTorchCascadeOrder(int n, uint expectedSumBits)
    {
        float[] values = SumInput(n);
        float expected = BitConverter.UInt32BitsToSingle(expectedSumBits);
        Assert.Equal(expectedSumBits, BitConverter.SingleToUInt32Bits(DoubleQuant.TorchSum(values)));
        Assert.Equal(expected / n, DoubleQuant.Mean(values));
        if (n >= 100)
        {
            // The order matters: a running sum in float32 lands elsewhere, so this golden can tell the orders apart.
            float running = 0f;
            foreach (float v in values) running += v;
            Assert.NotEqual(expected, running);
        }
    }

    /// <summary>The seeded input of <see cref="TorchSumGolden"/>: values in [0.001, 0.251) from a 32-bit LCG.</summary>
    private static float[] SumInput(int n)
    {
        var values = new float[n];
        uint state = 12345u + (uint)n;
        for (int i = 0; i < n; i++)
        {
            state = state * 1664525u + 1013904223u;
            values[i] = (float)((state >> 8) & 0xFFFF) / 65536f * 0.25f + 0.001f;
        }
        return values;
    }

    [Fact]
    public void QuantizeWithAStoredMapAndOffsetUsesThem()
    {
        // A checkpoint's own map and offset: codes index that map, and dequantizing reads that map.
        float[] absmax = [0.5f, 1.5f, 1f, 0.75f];                                    // minus offset 1: [-0.5, 0.5, 0, -0.25]
        float[] halfMap = [.. DynamicMap.Signed.ToArray().Select(v => v * 0.5f)];   // entries in [-0.4965, 0.5]
        var dq = DoubleQuant.Quantize(absmax, 1f, halfMap);
        Assert.Equal(1f, dq.Offset);
        Assert.Equal(new[] { 0.5f }, dq.NestedAbsmax);
        Assert.Equal(new byte[] { 0, 255, 127, 0 }, dq.Codes);                       // scaled -1, 1, 0, -0.5: nearest of the half map
        float[] restored = new float[4];
        DoubleQuant.Dequantize(dq, halfMap, restored);
        Assert.Equal(new[] { halfMap[0] * 0.5f + 1f, 1.25f, 1f, halfMap[0] * 0.5f + 1f }, restored);
        Assert.Equal(1.5f, DoubleQuant.Dequantize(dq)[1]);                            // the same codes read with the standard map
        Assert.Throws<ArgumentException>(() => DoubleQuant.Quantize(absmax, 0f, halfMap.AsSpan(1)));
        Assert.Throws<ArgumentException>(() => DoubleQuant.Dequantize(dq, halfMap.AsSpan(1), restored));
    }

    [Fact]
    public void BadInputThrows()
    {
        Assert.Throws<ArgumentException>(() => DoubleQuant.Quantize([]));
        var error = Assert.Throws<ArgumentException>(() => DoubleQuant.Quantize([1f, float.NaN], "q_proj.absmax"));
        Assert.Contains("'q_proj.absmax'", error.Message);
        Assert.Contains("index 1", error.Message);
    }
}
