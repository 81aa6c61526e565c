// The bitsandbytes 4-bit codebooks (NF4, FP4) and the exact rule that maps one scaled value to its 4-bit code.
// Tables and decision thresholds are the float32 constants of bitsandbytes (functional.py get_4bit_type, kernels.cu).
using System.Runtime.CompilerServices;

namespace VkPeft.Quant;

/// <summary>The two bitsandbytes 4-bit data types.</summary>
public enum QuantType
{
    /// <summary>4-bit NormalFloat: 16 quantiles of N(0,1) normalized to [-1, 1] (8 positive, 7 negative levels, exact 0).</summary>
    Nf4,

    /// <summary>bitsandbytes FP4: 1 sign bit (0b1000), 2 exponent bits, 1 mantissa bit, normalized by 12.</summary>
    Fp4,
}

/// <summary>Codebooks and value quantizers for <see cref="QuantType"/>.</summary>
public static class FourBitCodebooks
{
    /// <summary>NF4 value of each code 0..15 (float32). Dequantized weight = <c>Nf4[code] * absmax</c>.</summary>
    public static ReadOnlySpan<float> Nf4 =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>
    /// FP4 value of each code 0..15 (float32): raw values [0, 0.0625, 8, 12, 4, 6, 2, 3] divided by 12 for codes 0..7,
    /// the same values negated for codes 8..15 (code 8 is -0.0).
    /// </summary>
    public static ReadOnlySpan<float> Fp4 =>
    [
        0.0f / 12f, 0.0625f / 12f, 8f / 12f, 12f / 12f, 4f / 12f, 6f / 12f, 2f / 12f, 3f / 12f,
        -0.0f / 12f, -0.0625f / 12f, -8f / 12f, -12f / 12f, -4f / 12f, -6f / 12f, -2f / 12f, -3f / 12f,
    ];

    /// <summary>
    /// Decision points between adjacent NF4 codes, ascending: <c>Nf4Midpoints[k]</c> lies between <c>Nf4[k]</c> and
    /// <c>Nf4[k+1]</c>. These are the literals of CUDA <c>dQuantizeNF4</c> (double midpoints rounded to float), which for a
    /// few k are one ulp away from <c>(Nf4[k] + Nf4[k+1]) / 2f</c>; both reproduce the reference vectors.
    /// </summary>
    public static ReadOnlySpan<float> Nf4Midpoints =>
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    /// <summary>The 16 values of a codebook.</summary>
    public static ReadOnlySpan<float> Values(QuantType type) => type switch
    {
        QuantType.Nf4 => Nf4,
        QuantType.Fp4 => Fp4,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown 4-bit type"),
    };

    /// <summary>
    /// NF4 code of a value already scaled to [-1, 1]: the number of midpoints strictly below it, i.e. the nearest
    /// code, with a value exactly on a midpoint going to the LOWER code (CUDA's strict <c>&gt;</c>, <c>torch.bucketize</c>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int QuantizeNf4(float scaled)
    {
        ReadOnlySpan<float> midpoints = Nf4Midpoints;
        int code = 0;
        for (int k = 0; k < midpoints.Length; k++)
            code += scaled > midpoints[k] ? 1 : 0;
        return code;
    }

    /// <summary>
    /// FP4 code of a value already scaled to [-1, 1], exactly as CUDA <c>dQuantizeFP4</c>: sign bit 0b1000 when
    /// <c>scaled &lt; 0</c> (so tiny negatives become code 8 = -0), then strict <c>&gt;</c> against the |x| thresholds
    /// 0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int QuantizeFp4(float scaled)
    {
        int sign = scaled < 0f ? 0b1000 : 0;
        float x = MathF.Abs(scaled);
        int magnitude;
        if (x > 0.29166667f)
        {
            if (x > 0.583333f) magnitude = x > 0.8333333f ? 0b011 : 0b010;   // 12/12 : 8/12
            else magnitude = x > 0.4166667f ? 0b101 : 0b100;                 // 6/12 : 4/12
        }
        else if (x > 0.0859375f) magnitude = x > 0.20833333f ? 0b111 : 0b110; // 3/12 : 2/12
        else magnitude = x > 0.00260417f ? 0b001 : 0b000;                     // 0.0625/12 : 0
        return sign + magnitude;
    }

    /// <summary>Code of a scaled value for either type.</summary>
    public static int Quantize(float scaled, QuantType type) =>
        type == QuantType.Nf4 ? QuantizeNf4(scaled) : QuantizeFp4(scaled);
}
