// Double quantization of absmax statistics: dynamic map shape, error bound, partial 256-blocks, degenerate inputs.
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
    public void MeanUsesNumpyPairwiseSummation()
    {
        // 1 + 2^-24 * k rounds differently summed left to right than pairwise; check the documented pairing on 9 values:
        // accumulators r0..r7 = v0..v7, combined ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then v8 added.
        float tiny = MathF.Pow(2, -24);
        float[] values = [1f, tiny, tiny, tiny, 1f, tiny, tiny, tiny, 0f];
        float pairs = ((1f + tiny) + (tiny + tiny)) + ((1f + tiny) + (tiny + tiny));
        Assert.Equal(pairs + 0f, DoubleQuant.PairwiseSum(values));
        Assert.Equal(pairs / 9f, DoubleQuant.Mean(values));
        float leftToRight = 0f;
        foreach (float v in values) leftToRight += v;
        Assert.NotEqual(leftToRight, DoubleQuant.PairwiseSum(values));
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
