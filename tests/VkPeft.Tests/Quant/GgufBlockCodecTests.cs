// GGUF Q4_0 / Q4_1 / Q8_0 blocks against bytes written out by hand from the ggml block layouts, plus round trips.
using VkPeft.Quant;
using Xunit.Abstractions;

namespace VkPeft.Tests.Quant;

public class GgufBlockCodecTests(ITestOutputHelper output)
{
    [Fact]
    public void Q4_0BlockMatchesHandComputedBytes()
    {
        // x[j] = j − 16 (−16..15). max = −16 (largest |x|) → d = −16 / −8 = 2, id = 0.5;
        // q = min(15, trunc(x/2 + 8.5)): j < 16 → (j+1)/2; j ≥ 16 → 8 + (x+1)/2, x = 15 gives 16 → 15.
        // qs[j] = q[j] | q[j+16] << 4; d = fp16(2.0) = 0x4000 little-endian.
        float[] x = [.. Enumerable.Range(0, 32).Select(j => (float)(j - 16))];
        byte[] expected =
        [
            0x00, 0x40,
            0x80, 0x91, 0x91, 0xA2, 0xA2, 0xB3, 0xB3, 0xC4, 0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7, 0xF8,
        ];
        Assert.Equal(expected, GgufBlockCodec.Quantize(GgmlType.Q4_0, x));

        var restored = new float[32];
        GgufBlockCodec.Dequantize(GgmlType.Q4_0, expected, 32, restored);
        int[] q = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15, 15];
        Assert.Equal(q.Select(v => (v - 8) * 2f).ToArray(), restored);
    }

    [Fact]
    public void Q4_1BlockMatchesHandComputedBytes()
    {
        // x[j] = (j mod 16)·0.5 − 1, except x[17] = 0.25 and x[18] = 0.74. min −1, max 6.5 → d = 0.5, id = 2.
        // q = trunc((x+1)·2 + 0.5): x = 0.25 → 3 (round half UP, not to even), x = 0.74 → trunc(3.98) = 3.
        // d = fp16(0.5) = 0x3800, m = fp16(−1) = 0xBC00.
        float[] x = [.. Enumerable.Range(0, 32).Select(j => (j % 16) * 0.5f - 1f)];
        x[17] = 0.25f;
        x[18] = 0.74f;
        byte[] expected =
        [
            0x00, 0x38, 0x00, 0xBC,
            0x00, 0x31, 0x32, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF,
        ];
        Assert.Equal(expected, GgufBlockCodec.Quantize(GgmlType.Q4_1, x));

        var restored = new float[32];
        GgufBlockCodec.Dequantize(GgmlType.Q4_1, expected, 32, restored);
        float[] want = [.. x];
        want[17] = 0.5f;   // q = 3 → 0.5·3 − 1
        want[18] = 0.5f;
        Assert.Equal(want, restored);
    }

    [Fact]
    public void Q8_0BlockMatchesHandComputedBytes()
    {
        // amax 127 → d = 1 (fp16 0x3C00), id = 1, q = roundf(x): 2.5 → 3, −2.5 → −3, −0.5 → −1 (half away from zero).
        float[] x = new float[32];
        float[] head = [127f, -127f, 2.5f, -2.5f, 0.49f, -0.5f, 100.4f];
        head.CopyTo(x, 0);
        byte[] expected = new byte[34];
        byte[] expectedHead = [0x00, 0x3C, 0x7F, 0x81, 0x03, 0xFD, 0x00, 0xFF, 0x64];
        expectedHead.CopyTo(expected, 0);
        Assert.Equal(expected, GgufBlockCodec.Quantize(GgmlType.Q8_0, x));
    }

    [Fact]
    public void Q8_0ScaleIsStoredAsRoundedHalf()
    {
        // amax 1 → d = 1/127 = 0.0078740…; fp16: 2^-7 · (1 + 8/1024) = 0x2008 = 0.00787353515625.
        // q: 1 → 127, 0.25 → round(31.75) = 32, −0.1 → round(−12.7) = −13. Dequantized q·d exactly.
        float[] x = new float[32];
        x[0] = 1f;
        x[1] = 0.25f;
        x[2] = -0.1f;
        byte[] data = GgufBlockCodec.Quantize(GgmlType.Q8_0, x);
        Assert.Equal(new byte[] { 0x08, 0x20, 127, 32, unchecked((byte)-13), 0 }, data[..6]);
        var restored = new float[32];
        GgufBlockCodec.Dequantize(GgmlType.Q8_0, data, 32, restored);
        Assert.Equal(0.99993896484375f, restored[0]);
        Assert.Equal(32 * 0.00787353515625f, restored[1]);
        Assert.Equal(-13 * 0.00787353515625f, restored[2]);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0, 0x8000)]   // d = 0 / −8 = −0, as in the reference
    [InlineData(GgmlType.Q4_1, 0x0000)]
    [InlineData(GgmlType.Q8_0, 0x0000)]
    public void AllZeroBlockEncodesZeroScaleAndDecodesToZero(GgmlType type, int scaleBits)
    {
        byte[] data = GgufBlockCodec.Quantize(type, new float[64]);
        Assert.Equal(scaleBits, data[0] | (data[1] << 8));
        var restored = new float[64];
        restored.AsSpan().Fill(9f);
        GgufBlockCodec.Dequantize(type, data, 64, restored);
        Assert.All(restored, v => Assert.Equal(0f, v));
    }

    // Mean |error| on 2^18 N(0,1) samples, bands ±1.5 % (Q4_0 uses 15 of 16 levels with a symmetric scale;
    // Q4_1 spends the range min..max; Q8_0 is ~16× finer).
    [Theory]
    [InlineData(GgmlType.Q4_0, 0.07177)]
    [InlineData(GgmlType.Q4_1, 0.06487)]
    [InlineData(GgmlType.Q8_0, 0.00449)]
    public void GaussianRoundTripErrorIsInBand(GgmlType type, double expected)
    {
        float[] x = QuantTestData.Gaussian(1 << 18, 99);
        byte[] data = GgufBlockCodec.Quantize(type, x);
        Assert.Equal(GgufBlockCodec.ByteCount(type, x.Length), data.Length);
        var restored = new float[x.Length];
        GgufBlockCodec.Dequantize(type, data, x.Length, restored);
        double error = QuantTestData.MeanAbsError(x, restored);
        output.WriteLine($"{type}: mean |error| = {error:F5}");
        Assert.InRange(error, expected * 0.985, expected * 1.015);
    }

    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void FloatEncodingsRoundTripRepresentableValues(GgmlType type)
    {
        float[] x = [0f, -0f, 1f, -2.5f, 0.375f, 65504f, float.PositiveInfinity, float.NegativeInfinity, -3f];
        byte[] data = GgufBlockCodec.Quantize(type, x);
        Assert.Equal(x.Length * GgufBlockCodec.BlockBytes(type), data.Length);
        var restored = new float[x.Length];
        GgufBlockCodec.Dequantize(type, data, x.Length, restored);
        if (type == GgmlType.BF16) x[5] = 65536f;   // 65504 is not a bf16 value; it rounds to 2^16
        QuantTestData.BitEqual(x, restored, type.ToString());
    }

    [Fact]
    public void F16EncodingIsLittleEndianHalfBits()
    {
        Assert.Equal(new byte[] { 0x00, 0x3C, 0x00, 0xC0 }, GgufBlockCodec.Quantize(GgmlType.F16, [1f, -2f]));
        Assert.Equal(new byte[] { 0x80, 0x3F, 0x20, 0x41 }, GgufBlockCodec.Quantize(GgmlType.BF16, [1f, 10f]));
    }

    [Fact]
    public void SizesFollowTheBlockLayouts()
    {
        Assert.Equal(18 * 4, GgufBlockCodec.ByteCount(GgmlType.Q4_0, 128));
        Assert.Equal(20 * 4, GgufBlockCodec.ByteCount(GgmlType.Q4_1, 128));
        Assert.Equal(34 * 4, GgufBlockCodec.ByteCount(GgmlType.Q8_0, 128));
        Assert.Equal(2 * 128, GgufBlockCodec.ByteCount(GgmlType.BF16, 128));
    }

    [Fact]
    public void BadInputThrows()
    {
        Assert.Throws<ArgumentException>(() => GgufBlockCodec.Quantize(GgmlType.Q4_0, new float[48]));
        Assert.Throws<ArgumentException>(() => GgufBlockCodec.Quantize(GgmlType.Q8_0, []));
        float[] x = new float[64];
        x[33] = float.NaN;
        var error = Assert.Throws<ArgumentException>(() => GgufBlockCodec.Quantize(GgmlType.Q4_1, x, "blk.0.ffn_up.weight"));
        Assert.Contains("'blk.0.ffn_up.weight'", error.Message);
        Assert.Contains("index 33", error.Message);
        Assert.Throws<ArgumentException>(() => GgufBlockCodec.Dequantize(GgmlType.Q4_0, new byte[17], 32, new float[32]));
    }
}
