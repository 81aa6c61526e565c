// QA-LoRA INT4 group codec: hand-checked groups, rounding, constant and partial groups, error bound, bad input.
using VkPeft.Quant;
using Xunit.Abstractions;

namespace VkPeft.Tests.Quant;

public class Int4GroupCodecTests(ITestOutputHelper output)
{
    [Fact]
    public void EvenlySpacedGroupGetsScaleMinAndCodesExactly()
    {
        // One row, one group of 16: values 1, 1.5, ..., 8.5 → min 1, scale 7.5 / 15 = 0.5, q = i.
        float[] weights = [.. Enumerable.Range(0, 16).Select(i => 1f + 0.5f * i)];
        var q = Int4GroupCodec.Quantize(weights, 1, 16, groupSize: 16);
        Assert.Equal(new[] { 0.5f }, q.Scales);
        Assert.Equal(new[] { 1f }, q.Mins);
        Assert.Equal(new byte[] { 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF }, q.Packed);
        var restored = new float[16];
        Int4GroupCodec.Dequantize(q, restored);
        Assert.Equal(weights, restored);
    }

    [Fact]
    public void RoundsHalfToEven()
    {
        // min 0, max 15 → scale 1; 2.5 → 2, 3.5 → 4, 0.5 → 0, 14.5 → 14.
        float[] weights = [0f, 15f, 2.5f, 3.5f, 0.5f, 14.5f, 7.49f, 7.51f];
        var q = Int4GroupCodec.Quantize(weights, 1, 8, groupSize: 8);
        int[] codes = [.. Enumerable.Range(0, 8).Select(i => Nibbles.Get(q.Packed, i))];
        Assert.Equal(new[] { 0, 15, 2, 4, 0, 14, 7, 8 }, codes);
    }

    [Fact]
    public void ConstantGroupHasZeroScaleAndDequantizesToItsValue()
    {
        float[] weights = [3.25f, 3.25f, 3.25f, 3.25f, -1f, 2f, 0f, 1f];
        var q = Int4GroupCodec.Quantize(weights, 2, 4, groupSize: 4);
        Assert.Equal(new[] { 0f, 0.2f }, q.Scales);
        Assert.Equal(new[] { 3.25f, -1f }, q.Mins);
        var restored = new float[8];
        Int4GroupCodec.Dequantize(q, restored);
        Assert.Equal(new[] { 3.25f, 3.25f, 3.25f, 3.25f }, restored[..4]);
    }

    [Fact]
    public void PartialLastGroupOfEachRowIsItsOwnGroup()
    {
        // [2, 37], g = 32: groups [0,32) and [32,37) per row; the big value in row 0's tail affects only that group.
        float[] weights = QuantTestData.Gaussian(74, 9);
        weights[36] = 50f;
        var q = Int4GroupCodec.Quantize(weights, 2, 37, groupSize: 32);
        Assert.Equal(2, q.GroupsPerRow);
        Assert.Equal(4, q.Scales.Length);
        Assert.Equal(50f, q.Mins[1] + 15 * q.Scales[1], 1e-4f);
        Assert.True(q.Scales[0] < 1f && q.Scales[2] < 1f && q.Scales[3] < 1f);
        Assert.Equal(weights[37..69].Min(), q.Mins[2]);                           // row 1 starts at element 37
    }

    [Fact]
    public void OddInFeaturesPacksRowsContiguouslyInBnbOrder()
    {
        // [3, 5] = 15 codes → 8 bytes, row 1 starts in the low nibble of byte 2, last low nibble is padding.
        float[] weights = [0f, 15f, 0f, 15f, 0f, 15f, 0f, 15f, 0f, 15f, 0f, 15f, 0f, 15f, 0f];
        var q = Int4GroupCodec.Quantize(weights, 3, 5, groupSize: 5);
        Assert.Equal(new byte[] { 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x00 }, q.Packed);
    }

    [Theory]
    [InlineData(32, 0.06438)]
    [InlineData(128, 0.08491)]
    public void GaussianErrorIsBoundedPerElementAndInBand(int groupSize, double expectedMean)
    {
        const int outFeatures = 256, inFeatures = 1000;     // 1000 is not a multiple of 32 or 128
        float[] weights = QuantTestData.Gaussian(outFeatures * inFeatures, 21);
        var q = Int4GroupCodec.Quantize(weights, outFeatures, inFeatures, groupSize);
        var restored = new float[weights.Length];
        Int4GroupCodec.Dequantize(q, restored);
        for (int o = 0; o < outFeatures; o++)
        {
            for (int i = 0; i < inFeatures; i++)
            {
                int e = o * inFeatures + i;
                float scale = q.Scales[o * q.GroupsPerRow + i / groupSize];
                Assert.True(Math.Abs(weights[e] - restored[e]) <= scale * 0.5001f + 1e-6f, $"[{o},{i}]");
            }
        }
        double error = QuantTestData.MeanAbsError(weights, restored);
        output.WriteLine($"INT4 g={groupSize}: mean |error| = {error:F5}");
        Assert.InRange(error, expectedMean * 0.985, expectedMean * 1.015);
    }

    [Fact]
    public void BadInputThrows()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Int4GroupCodec.Quantize(new float[64], 2, 32, groupSize: 0));
        Assert.Throws<ArgumentException>(() => Int4GroupCodec.Quantize(new float[63], 2, 32));
        Assert.Throws<ArgumentOutOfRangeException>(() => Int4GroupCodec.Quantize([], 0, 32));
        float[] weights = new float[64];
        weights[40] = float.NaN;
        var error = Assert.Throws<ArgumentException>(() => Int4GroupCodec.Quantize(weights, 2, 32, 32, "o_proj"));
        Assert.Contains("'o_proj'", error.Message);
        Assert.Contains("index 40", error.Message);
    }
}
