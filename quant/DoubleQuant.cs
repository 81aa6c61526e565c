// Double quantization of 4-bit absmax statistics (bitsandbytes compress_statistics / QLoRA §3): subtract the mean,
// then quantize blockwise (256) to 8 bits with the signed dynamic map and one fp32 absmax per 256 values.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace VkPeft.Quant;

/// <summary>
/// Double-quantized absmax values (bitsandbytes <c>state2</c> layout).
/// <list type="bullet">
/// <item><see cref="Codes"/>: <c>byte[Count]</c>, one 8-bit index into <see cref="DynamicMap.Signed"/> per absmax value
/// (read as little-endian uint32 words on the GPU: code i is <c>(word[i &gt;&gt; 2] &gt;&gt; (8 * (i &amp; 3))) &amp; 0xFF</c>).</item>
/// <item><see cref="NestedAbsmax"/>: <c>float[ceil(Count / 256)]</c>, max |absmax[i] − Offset| over each 256-value block.</item>
/// <item><see cref="Offset"/>: the float32 mean of the original absmax values.</item>
/// </list>
/// Dequantized: <c>absmax[i] = DynamicMap.Signed[Codes[i]] * NestedAbsmax[i / 256] + Offset</c>, computed as
/// a float32 multiply rounded, then a float32 add rounded (no fused multiply-add; GLSL must use <c>precise</c> to match bit for bit).
/// </summary>
public sealed record DoubleQuantized(byte[] Codes, float[] NestedAbsmax, float Offset)
{
    /// <summary>Number of absmax values.</summary>
    public int Count => Codes.Length;
}

/// <summary>bitsandbytes double quantization of absmax statistics.</summary>
public static class DoubleQuant
{
    /// <summary>Blocksize of the second-level (8-bit) quantization.</summary>
    public const int NestedBlocksize = 256;

    /// <summary>
    /// Quantizes <paramref name="absmax"/>: <c>Offset = </c><see cref="Mean(ReadOnlySpan{float})"/>; each
    /// <c>r = absmax[i] − Offset</c> (fp32) is quantized with blockwise absmax over 256 values:
    /// <c>nested = max|r|</c>, <c>inv = nested == 0 ? 0 : 1f / nested</c>, code = <see cref="DynamicMap.Quantize(float)"/>(clamp(r * inv, −1, 1)).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static DoubleQuantized Quantize(ReadOnlySpan<float> absmax, string tensorName = "absmax")
    {
        WeightChecks.NotEmpty(absmax.Length, tensorName);
        WeightChecks.AllFinite(absmax, tensorName);
        float offset = Mean(absmax);
        var centered = new float[absmax.Length];
        TensorPrimitives.Subtract(absmax, offset, centered);

        var codes = new byte[absmax.Length];
        var nested = new float[Bnb4BitCodec.BlockCount(absmax.Length, NestedBlocksize)];
        for (int block = 0; block < nested.Length; block++)
        {
            int start = block * NestedBlocksize;
            var values = centered.AsSpan(start, Math.Min(NestedBlocksize, centered.Length - start));
            float blockMax = MathF.Abs(TensorPrimitives.MaxMagnitude(values));
            nested[block] = blockMax;
            float inverse = blockMax == 0f ? 0f : 1f / blockMax;
            for (int i = 0; i < values.Length; i++)
                codes[start + i] = DynamicMap.Quantize(Math.Clamp(values[i] * inverse, -1f, 1f));
        }
        return new DoubleQuantized(codes, nested, offset);
    }

    /// <summary>Reconstructs the absmax values into <paramref name="destination"/> (length ≥ Count); see <see cref="DoubleQuantized"/>.</summary>
    public static void Dequantize(DoubleQuantized q, Span<float> destination)
    {
        if (destination.Length < q.Count)
            throw new ArgumentException($"destination holds {destination.Length} values, {q.Count} needed", nameof(destination));
        ReadOnlySpan<float> map = DynamicMap.Signed;
        for (int i = 0; i < q.Count; i++)
        {
            float scaled = map[q.Codes[i]] * q.NestedAbsmax[i / NestedBlocksize];
            destination[i] = scaled + q.Offset;
        }
    }

    /// <summary>Reconstructed absmax values as a new array.</summary>
    public static float[] Dequantize(DoubleQuantized q)
    {
        var absmax = new float[q.Count];
        Dequantize(q, absmax);
        return absmax;
    }

    /// <summary>
    /// Float32 mean <c>sum / n</c>, with the sum accumulated exactly like NumPy's float32 <c>pairwise_sum</c> (which the
    /// reference vectors reproduce bit for bit; a plain running sum differs by an ulp on them):
    /// fewer than 8 values → running sum; up to 128 → 8 interleaved accumulators r[0..7] combined as
    /// ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the leftover values added in order; more → split at
    /// <c>n/2</c> rounded down to a multiple of 8 and add the two halves' sums.
    /// </summary>
    public static float Mean(ReadOnlySpan<float> values)
    {
        WeightChecks.NotEmpty(values.Length, nameof(values));
        return PairwiseSum(values) / values.Length;
    }

    /// <summary>NumPy's float32 pairwise summation (see <see cref="Mean(ReadOnlySpan{float})"/>).</summary>
    public static float PairwiseSum(ReadOnlySpan<float> values)
    {
        int n = values.Length;
        if (n < 8)
        {
            float sum = -0f;
            foreach (float v in values) sum += v;
            return sum;
        }
        if (n <= 128)
        {
            Span<float> r = stackalloc float[8];
            values[..8].CopyTo(r);
            int i = 8;
            for (; i < n - n % 8; i += 8)
            {
                for (int k = 0; k < 8; k++)
                    r[k] += values[i + k];
            }
            float sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < n; i++) sum += values[i];
            return sum;
        }
        int half = n / 2;
        half -= half % 8;
        return PairwiseSum(values[..half]) + PairwiseSum(values[half..]);
    }
}
