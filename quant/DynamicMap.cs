// The signed 8-bit dynamic quantization map of bitsandbytes (create_dynamic_map(signed=True, 7, 8)), which double
// quantization uses for the per-block absmax values. Built bit-exactly as the reference vectors' map.
using System.Runtime.CompilerServices;

namespace VkPeft.Quant;

/// <summary>bitsandbytes' signed dynamic map: 256 ascending float32 values in [-0.99296875, 1].</summary>
public static class DynamicMap
{
    private static readonly float[] SignedMap = CreateSigned();

    /// <summary>
    /// The 256 entries, ascending: [0] = -0.99296875, [127] = 0, [254] = 0.99296875, [255] = 1. Index = the 8-bit code.
    /// Checkpoints store this table as <c>nested_quant_map</c>; a loader should prefer the stored one.
    /// </summary>
    public static ReadOnlySpan<float> Signed => SignedMap;

    /// <summary>
    /// Float32 decision points: <c>Midpoints[k] = (Signed[k] + Signed[k+1]) * 0.5f</c>, 255 values ascending.
    /// </summary>
    public static ReadOnlySpan<float> Midpoints => SignedMidpoints;

    private static readonly float[] SignedMidpoints = CreateMidpoints(SignedMap);

    /// <summary>
    /// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for i = 0..6, n = 2^i + 1 boundaries
    /// <c>linspace(0.1, 1, n)</c> (computed in double as <c>0.1 + k*(0.9/(n-1))</c>, last = 1, then cast to
    /// float32), the n-1 float32 means <c>(b[k] + b[k+1]) / 2</c>, each times <c>(float)10^(i-6)</c> in float32,
    /// with both signs; then 0 and 1; sorted ascending. (This float32 linspace reproduces the reference map exactly.)
    /// </summary>
    public static float[] CreateSigned()
    {
        const int maxExponentBits = 7;
        var values = new List<float>(256);
        for (int i = 0; i < maxExponentBits; i++)
        {
            int boundaryCount = (1 << i) + 1;
            var boundaries = new float[boundaryCount];
            double step = (1.0 - 0.1) / (boundaryCount - 1);
            for (int k = 0; k < boundaryCount; k++)
                boundaries[k] = k == boundaryCount - 1 ? 1.0f : (float)(0.1 + k * step);
            float decade = (float)Math.Pow(10, i - (maxExponentBits - 1));
            for (int k = 0; k + 1 < boundaryCount; k++)
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

    private static float[] CreateMidpoints(float[] map)
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
    public static byte Quantize(float scaled)
    {
        ReadOnlySpan<float> midpoints = SignedMidpoints;
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
