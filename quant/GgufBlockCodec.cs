// GGUF/ggml legacy block formats Q4_0, Q4_1 and Q8_0 (ggml-common.h layouts), with the gguf-py reference quantizers
// (llama.cpp gguf-py/gguf/quants.py) reproduced bit for bit, plus the F32/F16/BF16 tensor encodings, and the block
// geometry of every ggml type id a GGUF file may declare (so a reader can check sizes of types it cannot decode).
using System.Buffers.Binary;

namespace VkPeft.Quant;

/// <summary>
/// ggml tensor type ids (the values written in GGUF tensor infos). <see cref="GgufBlockCodec"/> encodes and decodes
/// F32, F16, BF16, Q4_0, Q4_1 and Q8_0; the others are known by their block geometry only.
/// </summary>
public enum GgmlType
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    BF16 = 30,
}

/// <summary>
/// GGUF block codecs. A tensor is a sequence of blocks over its row-major elements; ggml requires each row
/// (ne[0] = in_features) to be a whole number of blocks, so the flat element count must be a multiple of the block size.
/// Block layouts (little-endian, packed, no padding; <c>d</c>, <c>m</c> are IEEE fp16):
/// <list type="bullet">
/// <item>Q4_0, 18 bytes / 32 weights: <c>f16 d; u8 qs[16]</c>; <c>qs[j] = q[j] | q[j+16] &lt;&lt; 4</c> (LOW nibble = element j,
/// HIGH nibble = element j+16 — not the bitsandbytes order); <c>x = (q − 8) * d</c>.</item>
/// <item>Q4_1, 20 bytes / 32 weights: <c>f16 d; f16 m; u8 qs[16]</c>, same nibbles; <c>x = d * q + m</c> (multiply rounded, then add).</item>
/// <item>Q8_0, 34 bytes / 32 weights: <c>f16 d; i8 qs[32]</c>; <c>x = qs[j] * d</c>.</item>
/// <item>F32 4 bytes, F16 2 bytes (round-to-nearest-even), BF16 2 bytes (<see cref="HalfPrecision.ToBf16(float)"/>) per weight.</item>
/// </list>
/// </summary>
public static class GgufBlockCodec
{
    /// <summary>(weights per block, bytes per block) of a ggml type id, or null for an id this project does not know.</summary>
    public static (int BlockSize, int BlockBytes)? Geometry(GgmlType type) => type switch
    {
        GgmlType.F32 => (1, 4), GgmlType.F16 => (1, 2), GgmlType.BF16 => (1, 2), GgmlType.F64 => (1, 8),
        GgmlType.I8 => (1, 1), GgmlType.I16 => (1, 2), GgmlType.I32 => (1, 4), GgmlType.I64 => (1, 8),
        GgmlType.Q4_0 => (32, 18), GgmlType.Q4_1 => (32, 20), GgmlType.Q5_0 => (32, 22), GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34), GgmlType.Q8_1 => (32, 36),
        GgmlType.Q2_K => (256, 84), GgmlType.Q3_K => (256, 110), GgmlType.Q4_K => (256, 144),
        GgmlType.Q5_K => (256, 176), GgmlType.Q6_K => (256, 210), GgmlType.Q8_K => (256, 292),
        _ => null,
    };

    /// <summary>Whether <see cref="Quantize"/> and <see cref="Dequantize"/> handle <paramref name="type"/>.</summary>
    public static bool IsCodec(GgmlType type) =>
        type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q8_0;

    /// <summary>Weights per block (32 for Q4_0/Q4_1/Q8_0, 1 for F32/F16/BF16; 256 for the K-quants).</summary>
    public static int BlockSize(GgmlType type) =>
        Geometry(type)?.BlockSize ?? throw new ArgumentOutOfRangeException(nameof(type), type, "unknown ggml type");

    /// <summary>Bytes per block: Q4_0 18, Q4_1 20, Q8_0 34, F32 4, F16 2, BF16 2 (and the geometry of the others).</summary>
    public static int BlockBytes(GgmlType type) =>
        Geometry(type)?.BlockBytes ?? throw new ArgumentOutOfRangeException(nameof(type), type, "unknown ggml type");

    /// <summary>Encoded size of <paramref name="count"/> weights (count must be a multiple of the block size).</summary>
    public static long ByteCount(GgmlType type, long count)
    {
        int blockSize = BlockSize(type);
        if (count % blockSize != 0)
            throw new ArgumentException($"{type} needs a multiple of {blockSize} weights per row, got {count}", nameof(count));
        return count / blockSize * BlockBytes(type);
    }

    private static void RequireCodec(GgmlType type)
    {
        if (!IsCodec(type)) throw new ArgumentOutOfRangeException(nameof(type), type, "no codec for this ggml type (F32, F16, BF16, Q4_0, Q4_1 and Q8_0 have one)");
    }

    /// <summary>Encodes the row-major weights as <paramref name="type"/>; see the class summary for layouts.</summary>
    /// <exception cref="ArgumentException">Empty input, a count that is not a whole number of blocks, or (quantized types) a NaN/infinite weight.</exception>
    public static byte[] Quantize(GgmlType type, ReadOnlySpan<float> weights, string tensorName = "weight")
    {
        RequireCodec(type);
        WeightChecks.NotEmpty(weights.Length, tensorName);
        var output = new byte[ByteCount(type, weights.Length)];
        switch (type)
        {
            case GgmlType.F32:
                for (int i = 0; i < weights.Length; i++)
                    BinaryPrimitives.WriteSingleLittleEndian(output.AsSpan(4 * i), weights[i]);
                return output;
            case GgmlType.F16:
                for (int i = 0; i < weights.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(output.AsSpan(2 * i), HalfPrecision.ToF16(weights[i]));
                return output;
            case GgmlType.BF16:
                for (int i = 0; i < weights.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(output.AsSpan(2 * i), HalfPrecision.ToBf16(weights[i]));
                return output;
        }
        WeightChecks.AllFinite(weights, tensorName);
        int blockBytes = BlockBytes(type);
        for (int b = 0; b < weights.Length / 32; b++)
        {
            var block = weights.Slice(32 * b, 32);
            var destination = output.AsSpan(b * blockBytes, blockBytes);
            if (type == GgmlType.Q4_0) QuantizeQ4_0Block(block, destination);
            else if (type == GgmlType.Q4_1) QuantizeQ4_1Block(block, destination);
            else QuantizeQ8_0Block(block, destination);
        }
        return output;
    }

    /// <summary>
    /// Q4_0 reference (gguf-py): <c>max</c> = the first value of largest |x|; <c>d = max / -8f</c>;
    /// <c>id = d == 0 ? 0 : 1f / d</c>; <c>q = min(15, trunc((float)((double)x * id + 8.5)))</c> — the double
    /// multiply-add emulates the fused multiply-add of ggml's C reference.
    /// </summary>
    public static void QuantizeQ4_0Block(ReadOnlySpan<float> block, Span<byte> destination)
    {
        float amax = 0f, max = 0f;
        foreach (float v in block)
        {
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        }
        float d = max / -8f;
        float id = d == 0f ? 0f : 1f / d;
        Span<int> q = stackalloc int[32];
        for (int j = 0; j < 32; j++)
            q[j] = Math.Min(15, (int)MathF.Truncate((float)((double)block[j] * id + 8.5)));
        BinaryPrimitives.WriteUInt16LittleEndian(destination, HalfPrecision.ToF16(d));
        PackLowHigh(q, destination[2..18]);
    }

    /// <summary>
    /// Q4_1 reference (gguf-py, all float32): <c>d = (max − min) / 15f</c>; <c>id = d == 0 ? 0 : 1f / d</c>;
    /// <c>q = min(15, trunc((x − min) * id + 0.5f))</c>; stores fp16(d), fp16(min).
    /// </summary>
    public static void QuantizeQ4_1Block(ReadOnlySpan<float> block, Span<byte> destination)
    {
        float min = System.Numerics.Tensors.TensorPrimitives.Min(block);
        float max = System.Numerics.Tensors.TensorPrimitives.Max(block);
        float d = (max - min) / 15f;
        float id = d == 0f ? 0f : 1f / d;
        Span<int> q = stackalloc int[32];
        for (int j = 0; j < 32; j++)
            q[j] = Math.Clamp((int)MathF.Truncate((block[j] - min) * id + 0.5f), 0, 15);
        BinaryPrimitives.WriteUInt16LittleEndian(destination, HalfPrecision.ToF16(d));
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], HalfPrecision.ToF16(min));
        PackLowHigh(q, destination[4..20]);
    }

    /// <summary>
    /// Q8_0 reference (gguf-py = ggml C): <c>d = max|x| / 127f</c>; <c>id = d == 0 ? 0 : 1f / d</c>;
    /// <c>q = roundf(x * id)</c> (half away from zero); stores fp16(d).
    /// </summary>
    public static void QuantizeQ8_0Block(ReadOnlySpan<float> block, Span<byte> destination)
    {
        float amax = MathF.Abs(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(block));
        float d = amax / 127f;
        float id = d == 0f ? 0f : 1f / d;
        BinaryPrimitives.WriteUInt16LittleEndian(destination, HalfPrecision.ToF16(d));
        for (int j = 0; j < 32; j++)
            destination[2 + j] = (byte)(sbyte)MathF.Round(block[j] * id, MidpointRounding.AwayFromZero);
    }

    /// <summary>GGUF 4-bit packing: byte j = q[j] (low nibble) | q[j+16] (high nibble).</summary>
    private static void PackLowHigh(ReadOnlySpan<int> q, Span<byte> qs)
    {
        for (int j = 0; j < 16; j++)
            qs[j] = (byte)(q[j] | (q[j + 16] << 4));
    }

    /// <summary>Decodes <paramref name="count"/> weights of <paramref name="type"/> into <paramref name="destination"/>.</summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> data, long count, Span<float> destination)
    {
        RequireCodec(type);
        long bytes = ByteCount(type, count);
        if (data.Length < bytes) throw new ArgumentException($"{type} data holds {data.Length} bytes, {bytes} needed for {count} weights", nameof(data));
        if (destination.Length < count) throw new ArgumentException($"destination holds {destination.Length} values, {count} needed", nameof(destination));
        int n = (int)count;
        switch (type)
        {
            case GgmlType.F32:
                for (int i = 0; i < n; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(data[(4 * i)..]);
                return;
            case GgmlType.F16:
                for (int i = 0; i < n; i++) destination[i] = HalfPrecision.FromF16(BinaryPrimitives.ReadUInt16LittleEndian(data[(2 * i)..]));
                return;
            case GgmlType.BF16:
                for (int i = 0; i < n; i++) destination[i] = HalfPrecision.FromBf16(BinaryPrimitives.ReadUInt16LittleEndian(data[(2 * i)..]));
                return;
        }
        int blockBytes = BlockBytes(type);
        for (int b = 0; b < n / 32; b++)
        {
            var block = data.Slice(b * blockBytes, blockBytes);
            var output = destination.Slice(32 * b, 32);
            float d = HalfPrecision.FromF16(BinaryPrimitives.ReadUInt16LittleEndian(block));
            switch (type)
            {
                case GgmlType.Q4_0:
                    for (int j = 0; j < 16; j++)
                    {
                        output[j] = ((block[2 + j] & 0xF) - 8) * d;
                        output[j + 16] = ((block[2 + j] >> 4) - 8) * d;
                    }
                    break;
                case GgmlType.Q4_1:
                    float m = HalfPrecision.FromF16(BinaryPrimitives.ReadUInt16LittleEndian(block[2..]));
                    for (int j = 0; j < 16; j++)
                    {
                        float low = d * (block[4 + j] & 0xF), high = d * (block[4 + j] >> 4);
                        output[j] = low + m;
                        output[j + 16] = high + m;
                    }
                    break;
                default:
                    for (int j = 0; j < 32; j++)
                        output[j] = (sbyte)block[2 + j] * d;
                    break;
            }
        }
    }
}
