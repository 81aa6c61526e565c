// The weight container: bits/param accounting for every format and consistency with the codecs (NF4+DQ quantize time on
// 4096² is printed, not asserted: a wall-clock bound fails on a loaded CI machine; bench/ measures speed).
using System.Diagnostics;
using VkPeft.Quant;
using Xunit.Abstractions;

namespace VkPeft.Tests.Quant;

public class QuantizedLinearWeightTests(ITestOutputHelper output)
{
    [Fact]
    public void Nf4WithDoubleQuantOn4096SquaredCosts4Point127Bits()
    {
        const int size = 4096;
        float[] weights = QuantTestData.Gaussian(size * size, 42);

        var clock = Stopwatch.StartNew();
        var weight = QuantizedLinearWeight.Bnb4Bit(weights, size, size);
        clock.Stop();
        output.WriteLine($"NF4+DQ quantize of {size}x{size}: {clock.Elapsed.TotalMilliseconds:F0} ms on {Environment.ProcessorCount} cores");

        long n = (long)size * size, blocks = n / 64;
        Assert.Equal(n / 2 + blocks + 4 * ((blocks + 255) / 256) + 4, weight.Bytes);
        output.WriteLine($"NF4+DQ bits/param: {weight.BitsPerParam:F5}");
        Assert.Equal(4.127, weight.BitsPerParam, 0.001);

        // Double-quantized reconstruction stays close to the fp32-absmax one: DQ adds ~0.1 % to the mean error.
        var plain = QuantizedLinearWeight.Bnb4Bit(weights, size, size, doubleQuant: false);
        double dqError = QuantTestData.MeanAbsError(weights, weight.Dequantize());
        double plainError = QuantTestData.MeanAbsError(weights, plain.Dequantize());
        output.WriteLine($"mean |error|: NF4 {plainError:F5}, NF4+DQ {dqError:F5}");
        Assert.InRange(dqError, plainError, plainError * 1.01);
    }

    [Theory]
    [InlineData(QuantType.Nf4, 64, false, 4.5)]
    [InlineData(QuantType.Fp4, 64, false, 4.5)]
    [InlineData(QuantType.Nf4, 32, false, 5.0)]
    [InlineData(QuantType.Nf4, 128, false, 4.25)]
    [InlineData(QuantType.Nf4, 64, true, 4 + 8.0 / 64 + 32.0 / (64 * 256) + 32.0 / (256 * 1024))]
    public void Bnb4BitBitsPerParam(QuantType type, int blocksize, bool doubleQuant, double expected)
    {
        var weight = QuantizedLinearWeight.Bnb4Bit(QuantTestData.Gaussian(256 * 1024, 1), 256, 1024, type, blocksize, doubleQuant);
        Assert.Equal(expected, weight.BitsPerParam, 1e-12);
    }

    [Theory]
    [InlineData(32, 6.0)]
    [InlineData(64, 5.0)]
    [InlineData(128, 4.5)]
    public void Int4GroupBitsPerParam(int groupSize, double expected)
    {
        var weight = QuantizedLinearWeight.Int4Group(QuantTestData.Gaussian(64 * 512, 1), 64, 512, groupSize);
        Assert.Equal(expected, weight.BitsPerParam, 1e-12);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0, 4.5)]
    [InlineData(GgmlType.Q4_1, 5.0)]
    [InlineData(GgmlType.Q8_0, 8.5)]
    [InlineData(GgmlType.F16, 16.0)]
    [InlineData(GgmlType.BF16, 16.0)]
    [InlineData(GgmlType.F32, 32.0)]
    public void GgufBitsPerParam(GgmlType type, double expected)
    {
        var weight = QuantizedLinearWeight.Gguf(QuantTestData.Gaussian(16 * 64, 1), 16, 64, type);
        Assert.Equal(expected, weight.BitsPerParam, 1e-12);
    }

    [Fact]
    public void ContainerDequantizesLikeTheCodecs()
    {
        float[] weights = QuantTestData.Gaussian(24 * 96, 8);

        var nf4 = QuantizedLinearWeight.Bnb4Bit(weights, 24, 96, QuantType.Fp4, 32, doubleQuant: false);
        var direct = new float[weights.Length];
        Bnb4BitCodec.Dequantize(Bnb4BitCodec.Quantize(weights, 32, QuantType.Fp4), direct);
        Assert.Equal(direct, nf4.Dequantize());
        Assert.Equal(WeightFormat.Fp4, nf4.Format);

        var int4 = QuantizedLinearWeight.Int4Group(weights, 24, 96, 32);
        Int4GroupCodec.Dequantize(Int4GroupCodec.Quantize(weights, 24, 96, 32), direct);
        Assert.Equal(direct, int4.Dequantize());

        var q40 = QuantizedLinearWeight.Gguf(weights, 24, 96, GgmlType.Q4_0);
        GgufBlockCodec.Dequantize(GgmlType.Q4_0, GgufBlockCodec.Quantize(GgmlType.Q4_0, weights), weights.Length, direct);
        Assert.Equal(direct, q40.Dequantize());
        Assert.Equal(32, q40.Blocksize);
    }

    [Fact]
    public void ShapeMismatchAndBadGgufRowsThrow()
    {
        Assert.Throws<ArgumentException>(() => QuantizedLinearWeight.Bnb4Bit(new float[100], 10, 11));
        var error = Assert.Throws<ArgumentException>(() => QuantizedLinearWeight.Gguf(new float[96], 2, 48, GgmlType.Q8_0, "blk.1.attn_q.weight"));
        Assert.Contains("multiple of 32", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizedLinearWeight.Bnb4Bit([], 0, 64));
    }
}
