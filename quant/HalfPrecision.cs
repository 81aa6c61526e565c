// IEEE fp16 and bfloat16 conversions as GGUF and the GPU store them: round-to-nearest-even, bit patterns as ushort.
using System.Numerics.Tensors;

namespace VkPeft.Quant;

/// <summary>float32 ↔ fp16 / bf16 conversions on raw 16-bit patterns (little-endian when written as bytes).</summary>
public static class HalfPrecision
{
    /// <summary>float32 → IEEE binary16 bits, round-to-nearest-even; overflow → ±inf; NaN stays NaN.</summary>
    public static ushort ToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>IEEE binary16 bits → float32 (exact).</summary>
    public static float FromF16(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Span form of <see cref="ToF16(float)"/> (vectorized).</summary>
    public static void ToF16(ReadOnlySpan<float> source, Span<ushort> destination) =>
        TensorPrimitives.ConvertToHalf(source, System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(destination));

    /// <summary>Span form of <see cref="FromF16(ushort)"/> (vectorized).</summary>
    public static void FromF16(ReadOnlySpan<ushort> source, Span<float> destination) =>
        TensorPrimitives.ConvertToSingle(System.Runtime.InteropServices.MemoryMarshal.Cast<ushort, Half>(source), destination);

    /// <summary>
    /// float32 → bfloat16 bits exactly as gguf-py: a NaN keeps its sign and upper mantissa bits and gets the quiet bit
    /// (0x0040) set; otherwise round-to-nearest-even on the upper 16 bits, <c>(bits + 0x7FFF + ((bits &gt;&gt; 16) &amp; 1)) &gt;&gt; 16</c>,
    /// which carries into the exponent (so values past the largest bf16 become ±inf).
    /// </summary>
    public static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
            return (ushort)((bits >> 16) | 0x0040);
        return (ushort)(((ulong)bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>bfloat16 bits → float32 (exact: the bits become the upper half).</summary>
    public static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Span form of <see cref="ToBf16(float)"/>.</summary>
    public static void ToBf16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination too short", nameof(destination));
        for (int i = 0; i < source.Length; i++) destination[i] = ToBf16(source[i]);
    }

    /// <summary>Span form of <see cref="FromBf16(ushort)"/>.</summary>
    public static void FromBf16(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination too short", nameof(destination));
        for (int i = 0; i < source.Length; i++) destination[i] = FromBf16(source[i]);
    }
}
