// One quantized nn.Linear weight [out, in]: which format, the exact buffers a shader reads, and its storage cost
// (bytes and bits per parameter). Factories quantize a float32 weight; Dequantize reproduces the shader's values.
namespace VkPeft.Quant;

/// <summary>Storage formats of a quantized linear weight.</summary>
public enum WeightFormat
{
    /// <summary>bitsandbytes NF4 (blockwise absmax, optionally double-quantized).</summary>
    Nf4,

    /// <summary>bitsandbytes FP4 (blockwise absmax, optionally double-quantized).</summary>
    Fp4,

    /// <summary>QA-LoRA INT4, per-row groups along in_features with fp32 scale and min.</summary>
    Int4Group,

    /// <summary>A GGUF/ggml tensor encoding (<see cref="GgmlType"/>).</summary>
    Gguf,
}

/// <summary>
/// A quantized weight of shape [OutFeatures, InFeatures] (row-major, element e = o*InFeatures + i). Buffers by format
/// (every buffer is tightly packed, little-endian; a GPU upload pads each to a multiple of 4 bytes with zeros):
/// <list type="bullet">
/// <item>Nf4/Fp4: <see cref="Data"/> = 4-bit codes in <see cref="Nibbles"/> order, <c>(n+1)/2</c> bytes;
/// without double quantization <see cref="Absmax"/> = <c>float[ceil(n/Blocksize)]</c>; with it
/// <see cref="QuantizedAbsmax"/> replaces Absmax (<see cref="DoubleQuantized"/>: codes <c>byte[ceil(n/Blocksize)]</c>,
/// nested absmax <c>float[ceil(nblk/256)]</c>, offset). <c>w = code[q] * absmax[e / Blocksize]</c>.</item>
/// <item>Int4Group: <see cref="Data"/> as above; <see cref="GroupScales"/>, <see cref="GroupMins"/> =
/// <c>float[Out * ceil(In/Blocksize)]</c>; <c>w = scale * q + min</c>; Blocksize is the group size.</item>
/// <item>Gguf: <see cref="Data"/> = <see cref="GgufBlockCodec"/> blocks of <see cref="GgmlType"/>; Blocksize = its block size.</item>
/// </list>
/// </summary>
public sealed class QuantizedLinearWeight
{
    private QuantizedLinearWeight(WeightFormat format, int outFeatures, int inFeatures, int blocksize, byte[] data)
    {
        Format = format;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Blocksize = blocksize;
        Data = data;
    }

    public WeightFormat Format { get; }
    public int OutFeatures { get; }
    public int InFeatures { get; }

    /// <summary>NF4/FP4 blocksize, INT4 group size, or GGUF block size (32, or 1 for F32/F16/BF16).</summary>
    public int Blocksize { get; }

    /// <summary>Packed 4-bit codes (Nf4, Fp4, Int4Group) or GGUF block bytes.</summary>
    public byte[] Data { get; }

    /// <summary>fp32 absmax per block (Nf4/Fp4 without double quantization), else null.</summary>
    public float[]? Absmax { get; private init; }

    /// <summary>Double-quantized absmax (Nf4/Fp4 with double quantization), else null.</summary>
    public DoubleQuantized? QuantizedAbsmax { get; private init; }

    /// <summary>INT4 per-group scales, index <c>o * GroupsPerRow + i / Blocksize</c>, else null.</summary>
    public float[]? GroupScales { get; private init; }

    /// <summary>INT4 per-group minimums (float zero points), same index as <see cref="GroupScales"/>, else null.</summary>
    public float[]? GroupMins { get; private init; }

    /// <summary>The GGUF tensor type (Gguf format only).</summary>
    public GgmlType? GgmlType { get; private init; }

    /// <summary>Number of parameters, Out * In.</summary>
    public long Count => (long)OutFeatures * InFeatures;

    /// <summary>
    /// Bytes of per-tensor data: codes/blocks, absmax (4 B each) or double-quantized absmax (1 B per code + 4 B per
    /// nested absmax + 4 B offset), INT4 scales and mins (4 B each). Constant tables shared by all tensors (the
    /// 16-entry codebook, the 256-entry dynamic map) are not counted, as in the QLoRA paper's accounting.
    /// </summary>
    public long Bytes =>
        Data.LongLength
        + 4L * (Absmax?.LongLength ?? 0)
        + (QuantizedAbsmax is { } dq ? dq.Codes.LongLength + 4L * dq.NestedAbsmax.LongLength + 4 : 0)
        + 4L * ((GroupScales?.LongLength ?? 0) + (GroupMins?.LongLength ?? 0));

    /// <summary><c>8 * Bytes / Count</c>: NF4 bs 64 → 4.5; with double quantization ≈ 4.127; INT4 g 32 → 6.0; Q4_0 → 4.5.</summary>
    public double BitsPerParam => 8.0 * Bytes / Count;

    /// <summary>Quantizes a row-major [out, in] weight with bitsandbytes NF4/FP4, optionally double-quantizing the absmax.</summary>
    public static QuantizedLinearWeight Bnb4Bit(ReadOnlySpan<float> weights, int outFeatures, int inFeatures,
        QuantType type = QuantType.Nf4, int blocksize = Bnb4BitCodec.DefaultBlocksize, bool doubleQuant = true,
        string tensorName = "weight")
    {
        CheckShape(weights.Length, outFeatures, inFeatures, tensorName);
        var q = Bnb4BitCodec.Quantize(weights, blocksize, type, tensorName);
        return FromBnb4Bit(q, outFeatures, inFeatures, doubleQuant ? DoubleQuant.Quantize(q.Absmax, tensorName + ".absmax") : null);
    }

    /// <summary>Wraps already quantized NF4/FP4 data; with <paramref name="quantizedAbsmax"/> the fp32 absmax is dropped.</summary>
    public static QuantizedLinearWeight FromBnb4Bit(Quantized4Bit q, int outFeatures, int inFeatures, DoubleQuantized? quantizedAbsmax)
    {
        CheckShape(q.Count, outFeatures, inFeatures, "weight");
        if (quantizedAbsmax != null && quantizedAbsmax.Count != q.BlockCount)
            throw new ArgumentException($"double-quantized absmax has {quantizedAbsmax.Count} values, the weight has {q.BlockCount} blocks", nameof(quantizedAbsmax));
        return new QuantizedLinearWeight(q.Type == QuantType.Nf4 ? WeightFormat.Nf4 : WeightFormat.Fp4,
            outFeatures, inFeatures, q.Blocksize, q.Packed)
        {
            Absmax = quantizedAbsmax == null ? q.Absmax : null,
            QuantizedAbsmax = quantizedAbsmax,
        };
    }

    /// <summary>Quantizes a row-major [out, in] weight with QA-LoRA INT4 groups of <paramref name="groupSize"/> inputs.</summary>
    public static QuantizedLinearWeight Int4Group(ReadOnlySpan<float> weights, int outFeatures, int inFeatures,
        int groupSize = Int4GroupCodec.DefaultGroupSize, string tensorName = "weight") =>
        FromInt4Group(Int4GroupCodec.Quantize(weights, outFeatures, inFeatures, groupSize, tensorName));

    /// <summary>Wraps an INT4 group-quantized weight.</summary>
    public static QuantizedLinearWeight FromInt4Group(Int4GroupQuantized q) =>
        new(WeightFormat.Int4Group, q.OutFeatures, q.InFeatures, q.GroupSize, q.Packed)
        {
            GroupScales = q.Scales,
            GroupMins = q.Mins,
        };

    /// <summary>Encodes a row-major [out, in] weight as a GGUF tensor (in_features must be a multiple of the block size).</summary>
    public static QuantizedLinearWeight Gguf(ReadOnlySpan<float> weights, int outFeatures, int inFeatures, GgmlType type,
        string tensorName = "weight")
    {
        CheckShape(weights.Length, outFeatures, inFeatures, tensorName);
        int blockSize = GgufBlockCodec.BlockSize(type);
        if (inFeatures % blockSize != 0)
            throw new ArgumentException($"tensor '{tensorName}': {type} needs in_features to be a multiple of {blockSize}, got {inFeatures}", tensorName);
        return new QuantizedLinearWeight(WeightFormat.Gguf, outFeatures, inFeatures, blockSize,
            GgufBlockCodec.Quantize(type, weights, tensorName))
        {
            GgmlType = type,
        };
    }

    /// <summary>Reconstructs the float32 weight (row-major) exactly as the formulas in the type summary.</summary>
    public void Dequantize(Span<float> destination)
    {
        if (destination.Length < Count)
            throw new ArgumentException($"destination holds {destination.Length} values, {Count} needed", nameof(destination));
        int n = checked((int)Count);
        switch (Format)
        {
            case WeightFormat.Nf4:
            case WeightFormat.Fp4:
                float[] absmax = QuantizedAbsmax is { } dq ? DoubleQuant.Dequantize(dq) : Absmax!;
                Bnb4BitCodec.Dequantize(Data, absmax, n, Blocksize,
                    Format == WeightFormat.Nf4 ? QuantType.Nf4 : QuantType.Fp4, destination);
                break;
            case WeightFormat.Int4Group:
                Int4GroupCodec.Dequantize(
                    new Int4GroupQuantized(OutFeatures, InFeatures, Blocksize, Data, GroupScales!, GroupMins!), destination);
                break;
            default:
                GgufBlockCodec.Dequantize(GgmlType!.Value, Data, n, destination);
                break;
        }
    }

    /// <summary>The reconstructed float32 weight as a new row-major array.</summary>
    public float[] Dequantize()
    {
        var weights = new float[Count];
        Dequantize(weights);
        return weights;
    }

    private static void CheckShape(long length, int outFeatures, int inFeatures, string tensorName)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        if ((long)outFeatures * inFeatures != length)
            throw new ArgumentException($"tensor '{tensorName}' has {length} values, shape [{outFeatures}, {inFeatures}] needs {(long)outFeatures * inFeatures}", tensorName);
    }
}
