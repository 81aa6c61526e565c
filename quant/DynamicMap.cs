// The signed 8-bit dynamic quantization map of bitsandbytes (create_dynamic_map(signed=True, 7, 8)), which double
// quantization uses for the per-block absmax values, built in float32 bit for bit as bitsandbytes' torch code builds it.
using System.Runtime.CompilerServices;

namespace VkPeft.Quant;

/// <summary>bitsandbytes' signed dynamic map: 256 ascending float32 values in [-0.99296875, 1].</summary>
public static class DynamicMap
{
    /// <summary>Number of entries (one per 8-bit code).</summary>
    public const int Size = 256;

    private static readonly float[] SignedMap = CreateSigned();

    /// <summary>
    /// The 256 entries, ascending: [0] = -0.99296875, [127] = 0, [254] = 0.99296875, [255] = 1. Index = the 8-bit code.
    /// vkpeft quantizes with this table, decodes with it on the device and writes it as <c>nested_quant_map</c>; a loader
    /// reads a checkpoint's own stored table instead.
    /// </summary>
    public static ReadOnlySpan<float> Signed => SignedMap;

    /// <summary>
    /// Float32 decision points: <c>Midpoints[k] = (Signed[k] + Signed[k+1]) * 0.5f</c>, 255 values ascending.
    /// </summary>
    public static ReadOnlySpan<float> Midpoints => SignedMidpoints;

    private static readonly float[] SignedMidpoints = MidpointsOf(SignedMap);

    /// <summary>
    /// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as bitsandbytes computes it in float32: for
    /// i = 0..6, n = 2^i + 1 boundaries <see cref="TorchLinspace"/>(0.1f, 1f, n), the n-1 float32 means
    /// <c>(b[k] + b[k+1]) / 2</c>, each times <c>(float)10^(i-6)</c> in float32, with both signs; then 0 and 1; sorted
    /// ascending. Bit for bit the table bitsandbytes ships (tests/.../Fixtures/bnb_dynamic_map.txt).
    /// </summary>
    public static float[] CreateSigned()
    {
        const int maxExponentBits = 7;
        var values = new List<float>(Size);
        for (int i = 0; i < maxExponentBits; i++)
        {
            float[] boundaries = TorchLinspace(0.1f, 1f, (1 << i) + 1);
            float decade = (float)Math.Pow(10, i - (maxExponentBits - 1));
            for (int k = 0; k + 1 < boundaries.Length; k++)
            {
                float mean = (boundaries[k] + boundaries[k + 1]) / 2f;
                values.Add(decade * mean);
                values.Add(-(decade * mean));
            }
        }
        values.Add(0f);
        values.Add(1f);
        values.Sort();
        return [.. values];
    }

    /// <summary>
    /// <c>torch.linspace(start, end, steps, dtype=torch.float32)</c> as it reproduces bitsandbytes' table: the step
    /// <c>(end - start) / (steps - 1)</c> in float32, then each element on its own (torch's CPU linspace kernel is a
    /// scalar loop), the first half (index &lt; steps/2) as <c>start + step·idx</c> and the rest as
    /// <c>end − step·(steps − 1 − idx)</c>, each a fused multiply-add (one rounding: the kernel as compiled with FMA
    /// contraction for AVX2 CPUs, and as CUDA's linspace computes it). The same formulas with a separately rounded
    /// product differ from the shipped table in 43 of its 256 entries; torch's former 8- or 16-wide vector
    /// <c>arange</c> path differed in 17 to 47.
    /// </summary>
    public static float[] TorchLinspace(float start, float end, int steps)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 2);
        float step = (end - start) / (steps - 1);
        int halfway = steps / 2;
        var result = new float[steps];
        for (int idx = 0; idx < steps; idx++)
            result[idx] = idx < halfway
                ? MathF.FusedMultiplyAdd(step, idx, start)
                : MathF.FusedMultiplyAdd(-step, steps - 1 - idx, end);
        return result;
    }

    /// <summary>Float32 decision points of an ascending map: <c>(map[k] + map[k+1]) * 0.5f</c>, one fewer than the map.</summary>
    public static float[] MidpointsOf(ReadOnlySpan<float> map)
    {
        var midpoints = new float[map.Length - 1];
        for (int k = 0; k < midpoints.Length; k++)
            midpoints[k] = (map[k] + map[k + 1]) * 0.5f;
        return midpoints;
    }

    /// <summary>
    /// Nearest map entry to <paramref name="scaled"/> (expected in [-1, 1]): the number of <see cref="Midpoints"/>
    /// strictly below it, so an exact midpoint goes to the LOWER entry (like <c>argmin</c>'s first index).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Quantize(float scaled) => Quantize(scaled, SignedMidpoints);

    /// <summary>Nearest entry of the map whose <see cref="MidpointsOf"/> are <paramref name="midpoints"/> (ties go to the lower entry).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Quantize(float scaled, ReadOnlySpan<float> midpoints)
    {
        int low = 0, high = midpoints.Length;      // answer in [low, high]
        while (low < high)
        {
            int mid = (low + high) >>> 1;
            if (scaled > midpoints[mid]) low = mid + 1;
            else high = mid;
        }
        return (byte)low;
    }
}
