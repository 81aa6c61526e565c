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
/// <item><see cref="Offset"/>: the float32 mean of the original absmax values (<see cref="DoubleQuant.Mean(ReadOnlySpan{float})"/>).</item>
/// </list>
/// Dequantized: <c>absmax[i] = map[Codes[i]] * NestedAbsmax[i / 256] + Offset</c>, computed as
/// a float32 multiply rounded, then a float32 add rounded (no fused multiply-add; GLSL must use <c>precise</c> to match bit for bit),
/// where <c>map</c> is <see cref="DynamicMap.Signed"/> for everything vkpeft quantizes, or a checkpoint's stored <c>nested_quant_map</c>.
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
    /// Quantizes <paramref name="absmax"/> as bitsandbytes does: <c>Offset = </c><see cref="Mean(ReadOnlySpan{float})"/>
    /// (torch's float32 <c>absmax.mean()</c>), codes from <see cref="DynamicMap.Signed"/>; see
    /// <see cref="Quantize(ReadOnlySpan{float}, float, ReadOnlySpan{float}, string)"/>.
    /// </summary>
    public static DoubleQuantized Quantize(ReadOnlySpan<float> absmax, string tensorName = "absmax")
    {
        CheckAbsmax(absmax, tensorName);
        return QuantizeChecked(absmax, Mean(absmax), DynamicMap.Midpoints);
    }

    /// <summary>
    /// Quantizes <paramref name="absmax"/> around a given <paramref name="offset"/> with a given ascending 256-entry
    /// <paramref name="map"/> (a checkpoint's own <c>nested_quant_map</c>): each <c>r = absmax[i] − offset</c> (fp32) is
    /// quantized with blockwise absmax over 256 values: <c>nested = max|r|</c>, <c>inv = nested == 0 ? 0 : 1f / nested</c>,
    /// code = the nearest map entry to clamp(r * inv, −1, 1) (<see cref="DynamicMap.Quantize(float, ReadOnlySpan{float})"/>).
    /// </summary>
    public static DoubleQuantized Quantize(ReadOnlySpan<float> absmax, float offset, ReadOnlySpan<float> map, string tensorName = "absmax")
    {
        CheckAbsmax(absmax, tensorName);
        CheckMap(map);
        return QuantizeChecked(absmax, offset, DynamicMap.MidpointsOf(map));
    }

    private static void CheckAbsmax(ReadOnlySpan<float> absmax, string tensorName)
    {
        WeightChecks.NotEmpty(absmax.Length, tensorName);
        WeightChecks.AllFinite(absmax, tensorName);
    }

    private static void CheckMap(ReadOnlySpan<float> map)
    {
        if (map.Length != DynamicMap.Size)
            throw new ArgumentException($"a double-quantization map has {DynamicMap.Size} entries, got {map.Length}", nameof(map));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static DoubleQuantized QuantizeChecked(ReadOnlySpan<float> absmax, float offset, ReadOnlySpan<float> midpoints)
    {
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
                codes[start + i] = DynamicMap.Quantize(Math.Clamp(values[i] * inverse, -1f, 1f), midpoints);
        }
        return new DoubleQuantized(codes, nested, offset);
    }

    /// <summary>Reconstructs the absmax values into <paramref name="destination"/> (length ≥ Count) with <see cref="DynamicMap.Signed"/>.</summary>
    public static void Dequantize(DoubleQuantized q, Span<float> destination) => Dequantize(q, DynamicMap.Signed, destination);

    /// <summary>
    /// Reconstructs the absmax values with a given 256-entry <paramref name="map"/> (a checkpoint's stored
    /// <c>nested_quant_map</c>): <c>map[code] * nested</c> rounded to fp32, then <c>+ offset</c> rounded (see <see cref="DoubleQuantized"/>).
    /// </summary>
    public static void Dequantize(DoubleQuantized q, ReadOnlySpan<float> map, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(q);
        CheckMap(map);
        if (destination.Length < q.Count)
            throw new ArgumentException($"destination holds {destination.Length} values, {q.Count} needed", nameof(destination));
        if (q.NestedAbsmax.Length < Bnb4BitCodec.BlockCount(q.Count, NestedBlocksize))
            throw new ArgumentException($"{q.NestedAbsmax.Length} nested absmax values for {q.Count} codes", nameof(q));
        for (int i = 0; i < q.Count; i++)
        {
            float scaled = map[q.Codes[i]] * q.NestedAbsmax[i / NestedBlocksize];
            destination[i] = scaled + q.Offset;
        }
    }

    /// <summary>Reconstructed absmax values as a new array.</summary>
    public static float[] Dequantize(DoubleQuantized q)
    {
        ArgumentNullException.ThrowIfNull(q);
        var absmax = new float[q.Count];
        Dequantize(q, absmax);
        return absmax;
    }

    /// <summary>
    /// torch's float32 <c>tensor.mean()</c> on the CPU, which bitsandbytes stores as <c>nested_offset</c>:
    /// <see cref="TorchSum"/> divided by <c>(float)n</c> (a true float32 division; CUDA's mean multiplies by 1/n instead).
    /// </summary>
    public static float Mean(ReadOnlySpan<float> values)
    {
        WeightChecks.NotEmpty(values.Length, nameof(values));
        return TorchSum(values) / values.Length;
    }

    /// <summary>Vector width the torch sum order assumes: <c>Vectorized&lt;float&gt;::size()</c> on AVX2 (8 floats).</summary>
    public const int TorchVectorLanes = 8;

    /// <summary>
    /// torch's CPU float32 sum of a contiguous 1-D tensor (aten SumKernel.cpp <c>cascade_sum</c>), single-threaded
    /// (torch splits a sum of more than 32,768 values across its threads; this is the order of one thread) with AVX2's
    /// 8-float vectors, accumulating in float32:
    /// <list type="bullet">
    /// <item>n ≥ 8: the first <c>8·⌊n/8⌋</c> values as <c>⌊n/8⌋</c> vectors go through <see cref="RowSum"/> (lane-wise);
    /// then a float starting at 0 adds the last <c>n mod 8</c> values in order, then the 8 lanes in order.</item>
    /// <item>n &lt; 8: <see cref="RowSum"/> of the values as 1-wide units.</item>
    /// </list>
    /// </summary>
    public static float TorchSum(ReadOnlySpan<float> values)
    {
        int n = values.Length;
        if (n < TorchVectorLanes)
        {
            Span<float> single = stackalloc float[1];
            RowSum(values, n, 1, single);
            return single[0];
        }
        int vectors = n / TorchVectorLanes;
        Span<float> lanes = stackalloc float[TorchVectorLanes];
        RowSum(values, vectors, TorchVectorLanes, lanes);
        float total = 0f;
        for (int k = vectors * TorchVectorLanes; k < n; k++) total += values[k];
        foreach (float lane in lanes) total += lane;
        return total;
    }

    /// <summary>
    /// torch's <c>row_sum</c> over <paramref name="units"/> consecutive units of <paramref name="width"/> floats
    /// (a unit is a vector, or one float when width is 1), into <paramref name="result"/>[width]: the units in groups of
    /// 4 form ⌊units/4⌋ rows summed by <see cref="MultiRowSum"/> into 4 partial sums (one per position in the group);
    /// the last <c>units mod 4</c> units are added to partial 0 in order; then partials 1, 2, 3 are added to partial 0.
    /// </summary>
    private static void RowSum(ReadOnlySpan<float> values, int units, int width, Span<float> result)
    {
        const int groups = 4;   // torch's ilp_factor
        int rows = units / groups;
        Span<float> partials = stackalloc float[groups * width];   // [group, lane]
        MultiRowSum(values, rows, groups * width, partials);
        Span<float> first = partials[..width];
        for (int unit = rows * groups; unit < units; unit++)
            AddInto(first, values.Slice(unit * width, width));
        for (int g = 1; g < groups; g++)
            AddInto(first, partials.Slice(g * width, width));
        first.CopyTo(result);
    }

    /// <summary>
    /// torch's <c>multi_row_sum</c> (4 levels): sums <paramref name="rows"/> consecutive rows of
    /// <paramref name="rowWidth"/> floats column-wise into <paramref name="result"/>[rowWidth]. With
    /// <c>p = max(4, CeilLog2(rows) / 4)</c> and step <c>2^p</c>: every 2^p rows are added into level 0, which is then
    /// carried into level 1 and cleared; level j is carried into level j+1 (and cleared) only when the row count so far
    /// is a multiple of 2^(p·(j+1)). Leftover rows go into level 0; at the end levels 1, 2, 3 are added to level 0 in
    /// that order.
    /// </summary>
    private static void MultiRowSum(ReadOnlySpan<float> values, int rows, int rowWidth, Span<float> result)
    {
        const int levels = 4;
        int levelPower = Math.Max(4, CeilLog2(rows) / levels);
        long levelStep = 1L << levelPower, levelMask = levelStep - 1;
        Span<float> acc = stackalloc float[levels * rowWidth];   // [level, column]
        acc.Clear();
        Span<float> level0 = acc[..rowWidth];
        long i = 0;
        while (i + levelStep <= rows)
        {
            for (long j = 0; j < levelStep; j++, i++)
                AddInto(level0, values.Slice((int)i * rowWidth, rowWidth));
            for (int level = 1; level < levels; level++)
            {
                var below = acc.Slice((level - 1) * rowWidth, rowWidth);
                AddInto(acc.Slice(level * rowWidth, rowWidth), below);
                below.Clear();
                if ((i & (levelMask << (level * levelPower))) != 0) break;
            }
        }
        for (; i < rows; i++)
            AddInto(level0, values.Slice((int)i * rowWidth, rowWidth));
        for (int level = 1; level < levels; level++)
            AddInto(level0, acc.Slice(level * rowWidth, rowWidth));
        level0.CopyTo(result);
    }

    /// <summary>⌈log2 x⌉ as ATen's <c>CeilLog2</c> (1 for x ≤ 2).</summary>
    private static int CeilLog2(long x) => x <= 2 ? 1 : 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(x - 1));

    private static void AddInto(Span<float> accumulator, ReadOnlySpan<float> addend)
    {
        for (int k = 0; k < accumulator.Length; k++) accumulator[k] += addend[k];
    }
}
