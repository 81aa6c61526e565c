// fp16 and bf16 conversions: exact bit patterns, round-to-nearest-even ties, overflow, subnormals, NaN and infinities.
using VkPeft.Quant;

namespace VkPeft.Tests.Quant;

public class HalfPrecisionTests
{
    [Theory]
    [InlineData(1f, 0x3C00)]
    [InlineData(-2f, 0xC000)]
    [InlineData(0f, 0x0000)]
    [InlineData(-0f, 0x8000)]
    [InlineData(65504f, 0x7BFF)]                 // largest finite half
    [InlineData(65519f, 0x7BFF)]                 // just below the 65504/65536 midpoint
    [InlineData(65520f, 0x7C00)]                 // the midpoint: ties to even → overflow to +inf
    [InlineData(1.00048828125f, 0x3C00)]         // 1 + 2^-11: tie between 0x3C00 and 0x3C01 → even 0x3C00
    [InlineData(1.00146484375f, 0x3C02)]         // 1 + 3·2^-11: tie between 0x3C01 and 0x3C02 → even 0x3C02
    [InlineData(1.0009765625f, 0x3C01)]          // 1 + 2^-10 exactly
    [InlineData(5.9604644775390625e-08f, 0x0001)] // 2^-24, smallest subnormal
    [InlineData(2.98023223876953125e-08f, 0x0000)] // 2^-25: tie between 0 and 2^-24 → 0
    [InlineData(8.94069671630859375e-08f, 0x0002)] // 3·2^-25: tie between 1 and 2 subnormal units → 2
    [InlineData(float.PositiveInfinity, 0x7C00)]
    [InlineData(float.NegativeInfinity, 0xFC00)]
    public void F16RoundsToNearestEven(float value, int bits)
    {
        Assert.Equal((ushort)bits, HalfPrecision.ToF16(value));
        ushort[] spanBits = new ushort[1];
        HalfPrecision.ToF16([value], spanBits);
        Assert.Equal((ushort)bits, spanBits[0]);
    }

    [Fact]
    public void F16NaNStaysNaNAndDecodesExactly()
    {
        ushort nanBits = HalfPrecision.ToF16(float.NaN);
        Assert.Equal(0x7C00, nanBits & 0x7C00);
        Assert.NotEqual(0, nanBits & 0x03FF);
        Assert.True(float.IsNaN(HalfPrecision.FromF16(0x7E00)));
        Assert.Equal(65504f, HalfPrecision.FromF16(0x7BFF));
        Assert.Equal(-5.9604644775390625e-08f, HalfPrecision.FromF16(0x8001));
        Assert.Equal(float.NegativeInfinity, HalfPrecision.FromF16(0xFC00));
        float[] decoded = new float[2];
        HalfPrecision.FromF16([0x3C00, 0xC000], decoded);
        Assert.Equal(new[] { 1f, -2f }, decoded);
    }

    [Theory]
    [InlineData(0x3F800000u, 0x3F80)]   // 1.0
    [InlineData(0x3F808000u, 0x3F80)]   // 1 + 2^-8: tie → even (down)
    [InlineData(0x3F818000u, 0x3F82)]   // 1 + 3·2^-8: tie → even (up)
    [InlineData(0x3F808001u, 0x3F81)]   // just above the tie → up
    [InlineData(0x3F807FFFu, 0x3F80)]   // just below the tie → down
    [InlineData(0x7F7FFFFFu, 0x7F80)]   // float max rounds up into +inf
    [InlineData(0x7F800000u, 0x7F80)]   // +inf
    [InlineData(0xFF800000u, 0xFF80)]   // −inf
    [InlineData(0x80000000u, 0x8000)]   // −0
    [InlineData(0x00008000u, 0x0000)]   // subnormal tie → even (0)
    [InlineData(0x00018000u, 0x0002)]   // subnormal tie → even (2)
    [InlineData(0x7FC00000u, 0x7FC0)]   // quiet NaN
    [InlineData(0x7F800001u, 0x7FC0)]   // signalling NaN: upper bits kept, quiet bit set (no rounding into inf)
    [InlineData(0xFF812345u, 0xFFC1)]   // negative NaN payload kept in the upper bits
    public void Bf16RoundsToNearestEvenAndQuietsNaN(uint floatBits, int bits)
    {
        float value = BitConverter.UInt32BitsToSingle(floatBits);
        Assert.Equal((ushort)bits, HalfPrecision.ToBf16(value));
        ushort[] spanBits = new ushort[1];
        HalfPrecision.ToBf16([value], spanBits);
        Assert.Equal((ushort)bits, spanBits[0]);
    }

    [Fact]
    public void Bf16DecodesToUpperHalfOfFloat()
    {
        Assert.Equal(1f, HalfPrecision.FromBf16(0x3F80));
        Assert.Equal(-10f, HalfPrecision.FromBf16(0xC120));
        Assert.True(float.IsNaN(HalfPrecision.FromBf16(0x7FC0)));
        float[] decoded = new float[2];
        HalfPrecision.FromBf16([0x3F80, 0xFF80], decoded);
        Assert.Equal(new[] { 1f, float.NegativeInfinity }, decoded);
    }

    [Fact]
    public void Bf16RoundTripOfRandomFloatsIsWithinHalfAnUlp()
    {
        var random = new Random(3);
        for (int i = 0; i < 10_000; i++)
        {
            float x = (float)((random.NextDouble() - 0.5) * Math.Pow(10, random.Next(-10, 10)));
            float back = HalfPrecision.FromBf16(HalfPrecision.ToBf16(x));
            Assert.True(Math.Abs(x - back) <= Math.Abs(x) * (1.0 / 256) + 1e-38, $"{x:R} → {back:R}");
        }
    }
}
