// Blockwise NF4/FP4 quantization exactly as bitsandbytes quantize_4bit/dequantize_4bit (without the statistics
// compression, which is DoubleQuant): blocks over the row-major flattened weight, one fp32 absmax per block.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace VkPeft.Quant;

/// <summary>
/// A 4-bit blockwise-quantized tensor (bitsandbytes layout).
/// <list type="bullet">
/// <item><see cref="Packed"/>: <c>byte[(Count + 1) / 2]</c>, codes of the row-major flattened tensor in
/// <see cref="Nibbles"/> order (element 2k in the high nibble of byte k, 2k+1 in the low nibble; odd count → last low nibble 0).</item>
/// <item><see cref="Absmax"/>: <c>float[ceil(Count / Blocksize)]</c>, <c>Absmax[b] = max |w[j]|</c> over
/// <c>j</c> in <c>[b*Blocksize, min((b+1)*Blocksize, Count))</c>; a final partial block has its own absmax.</item>
/// </list>
/// Dequantized element: <c>w[j] = Values(Type)[code(j)] * Absmax[j / Blocksize]</c>, one float32 multiply.
/// </summary>
public sealed record Quantized4Bit(QuantType Type, int Blocksize, int Count, byte[] Packed, float[] Absmax)
{
    /// <summary>Number of blocks, <c>ceil(Count / Blocksize)</c>.</summary>
    public int BlockCount => Absmax.Length;
}

/// <summary>bitsandbytes NF4/FP4 blockwise codec.</summary>
public static class Bnb4BitCodec
{
    /// <summary>bitsandbytes' default 4-bit blocksize.</summary>
    public const int DefaultBlocksize = 64;

    /// <summary>Blocks handled per parallel work item (about 64K elements at blocksize 64).</summary>
    private const int BlocksPerTask = 1024;

    /// <summary>Throws unless <paramref name="blocksize"/> is one of 32, 64, 128, ..., 4096 (bitsandbytes HEAD).</summary>
    public static void ValidateBlocksize(int blocksize)
    {
        if (blocksize < 32 || blocksize > 4096 || !int.IsPow2(blocksize))
            throw new ArgumentOutOfRangeException(nameof(blocksize), blocksize,
                "4-bit blocksize must be a power of two from 32 to 4096 (32, 64, 128, ..., 4096)");
    }

    /// <summary>Number of blocks for <paramref name="count"/> elements: <c>ceil(count / blocksize)</c>.</summary>
    public static int BlockCount(int count, int blocksize) => (int)(((long)count + blocksize - 1) / blocksize);

    /// <summary>
    /// Quantizes the row-major flattened weight <paramref name="weights"/>. Per block: <c>absmax = max|x|</c>
    /// (fp32); <c>inv = absmax == 0 ? 0 : 1f / absmax</c>; <c>scaled = clamp(x * inv, -1, 1)</c> in fp32;
    /// code = <see cref="FourBitCodebooks.Quantize(float, QuantType)"/>(scaled). An all-zero block therefore gets absmax 0 and
    /// the code of 0.0 (NF4 7, FP4 0), as in the reference vectors.
    /// </summary>
    /// <exception cref="ArgumentException">Empty input, or a NaN/infinite weight (the message names tensor and index).</exception>
    public static Quantized4Bit Quantize(ReadOnlySpan<float> weights, int blocksize = DefaultBlocksize,
        QuantType type = QuantType.Nf4, string tensorName = "weight")
    {
        ValidateBlocksize(blocksize);
        WeightChecks.NotEmpty(weights.Length, tensorName);
        WeightChecks.AllFinite(weights, tensorName);
        var result = new Quantized4Bit(type, blocksize, weights.Length,
            new byte[Nibbles.PackedLength(weights.Length)], new float[BlockCount(weights.Length, blocksize)]);
        unsafe
        {
            fixed (float* source = weights)
            {
                var input = (nint)source;
                int length = weights.Length;
                int tasks = (result.BlockCount + BlocksPerTask - 1) / BlocksPerTask;
                Parallel.For(0, tasks, task =>
                {
                    int firstBlock = task * BlocksPerTask;
                    int endBlock = Math.Min(firstBlock + BlocksPerTask, result.BlockCount);
                    var all = new ReadOnlySpan<float>((float*)input, length);
                    for (int block = firstBlock; block < endBlock; block++)
                        QuantizeBlock(all, block, result);
                });
            }
        }
        return result;
    }

    // Hot loop: compiled fully optimized at once, so a single large call does not run in tier-0 code.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeBlock(ReadOnlySpan<float> all, int block, Quantized4Bit result)
    {
        int start = block * result.Blocksize;
        var values = all.Slice(start, Math.Min(result.Blocksize, all.Length - start));
        float absmax = MathF.Abs(TensorPrimitives.MaxMagnitude(values));
        result.Absmax[block] = absmax;

        float inverse = absmax == 0f ? 0f : 1f / absmax;
        Span<byte> packed = result.Packed.AsSpan(start / 2, (values.Length + 1) / 2);
        bool nf4 = result.Type == QuantType.Nf4;
        for (int k = 0; k < packed.Length; k++)
        {
            int high = QuantizeScaled(values[2 * k] * inverse, nf4);
            int low = 2 * k + 1 < values.Length ? QuantizeScaled(values[2 * k + 1] * inverse, nf4) : 0;
            packed[k] = (byte)((high << 4) | low);
        }
    }

    private static int QuantizeScaled(float scaled, bool nf4)
    {
        scaled = Math.Clamp(scaled, -1f, 1f);
        return nf4 ? FourBitCodebooks.QuantizeNf4(scaled) : FourBitCodebooks.QuantizeFp4(scaled);
    }

    /// <summary>Dequantizes <paramref name="q"/> with its own fp32 absmax into <paramref name="destination"/> (length ≥ Count).</summary>
    public static void Dequantize(Quantized4Bit q, Span<float> destination) =>
        Dequantize(q.Packed, q.Absmax, q.Count, q.Blocksize, q.Type, destination);

    /// <summary>
    /// <c>destination[j] = Values(type)[code(j)] * absmax[j / blocksize]</c> for <c>j &lt; count</c> (float32 multiply).
    /// <paramref name="absmax"/> may come from <see cref="DoubleQuant.Dequantize(DoubleQuantized, Span{float})"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dequantize(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, int count, int blocksize,
        QuantType type, Span<float> destination)
    {
        ValidateBlocksize(blocksize);
        if (packed.Length < Nibbles.PackedLength(count) || absmax.Length < BlockCount(count, blocksize))
            throw new ArgumentException($"buffers too small for {count} elements at blocksize {blocksize}");
        if (destination.Length < count)
            throw new ArgumentException($"destination holds {destination.Length} values, {count} needed", nameof(destination));
        ReadOnlySpan<float> codebook = FourBitCodebooks.Values(type);
        for (int block = 0, start = 0; start < count; block++, start += blocksize)
        {
            float scale = absmax[block];
            int end = Math.Min(start + blocksize, count);
            for (int j = start; j < end; j++)
                destination[j] = codebook[Nibbles.Get(packed, j)] * scale;
        }
    }
}
