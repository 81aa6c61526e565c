// Group-wise asymmetric INT4 quantization for QA-LoRA (paper Eq. 1): per output row and per group of g consecutive
// inputs, w ≈ scale·q + min with float32 scale and min, so a QA-LoRA merge can shift min losslessly.
namespace VkPeft.Quant;

/// <summary>
/// An INT4 group-quantized weight of shape [OutFeatures, InFeatures] (row-major, PyTorch <c>nn.Linear</c> layout).
/// With <c>G = GroupsPerRow = ceil(InFeatures / GroupSize)</c> (a partial last group is its own group):
/// <list type="bullet">
/// <item><see cref="Packed"/>: <c>byte[(Out*In + 1) / 2]</c>, the codes 0..15 of the row-major flattened weight in
/// <see cref="Nibbles"/> order (element e = o*In + i: byte e/2, high nibble when e is even). Rows are not byte-aligned when In is odd.</item>
/// <item><see cref="Scales"/>: <c>float[Out * G]</c>, index <c>o*G + i/GroupSize</c>; <c>scale = (max − min) / 15</c> (fp32).</item>
/// <item><see cref="Mins"/>: <c>float[Out * G]</c>, same index; the group minimum (QA-LoRA β, a float zero point).</item>
/// </list>
/// Dequantized: <c>w[o,i] = Scales[o*G + i/GroupSize] * q + Mins[o*G + i/GroupSize]</c>, a float32 multiply rounded
/// and then a float32 add rounded (no fused multiply-add).
/// </summary>
public sealed record Int4GroupQuantized(int OutFeatures, int InFeatures, int GroupSize, byte[] Packed, float[] Scales, float[] Mins)
{
    /// <summary>Groups per output row, <c>ceil(InFeatures / GroupSize)</c>.</summary>
    public int GroupsPerRow => (InFeatures + GroupSize - 1) / GroupSize;

    /// <summary>Number of weights.</summary>
    public long Count => (long)OutFeatures * InFeatures;
}

/// <summary>Group-wise asymmetric INT4 codec (QA-LoRA).</summary>
public static class Int4GroupCodec
{
    /// <summary>QA-LoRA's default group size.</summary>
    public const int DefaultGroupSize = 32;

    /// <summary>
    /// Quantizes the row-major weight [outFeatures, inFeatures]. Per group: <c>min</c>, <c>max</c> of its values;
    /// <c>scale = (max − min) / 15f</c>; <c>q = clamp(round((w − min) / scale), 0, 15)</c> with float32 subtract and
    /// divide and round-half-to-even (<c>torch.round</c>); a constant group has scale 0, all q = 0, and dequantizes to
    /// exactly <c>min</c>.
    /// </summary>
    /// <exception cref="ArgumentException">Empty input, wrong length, group size &lt; 1, or a NaN/infinite weight.</exception>
    public static Int4GroupQuantized Quantize(ReadOnlySpan<float> weights, int outFeatures, int inFeatures,
        int groupSize = DefaultGroupSize, string tensorName = "weight")
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(groupSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outFeatures, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFeatures, 1);
        if ((long)outFeatures * inFeatures != weights.Length)
            throw new ArgumentException($"tensor '{tensorName}' has {weights.Length} values, shape [{outFeatures}, {inFeatures}] needs {(long)outFeatures * inFeatures}", tensorName);
        WeightChecks.AllFinite(weights, tensorName);

        int groups = (inFeatures + groupSize - 1) / groupSize;
        var result = new Int4GroupQuantized(outFeatures, inFeatures, groupSize,
            new byte[Nibbles.PackedLength(weights.Length)], new float[outFeatures * groups], new float[outFeatures * groups]);
        for (int o = 0; o < outFeatures; o++)
        {
            for (int g = 0; g < groups; g++)
            {
                int rowStart = g * groupSize;
                long start = (long)o * inFeatures + rowStart;
                var values = weights.Slice((int)start, Math.Min(groupSize, inFeatures - rowStart));
                float min = System.Numerics.Tensors.TensorPrimitives.Min(values);
                float max = System.Numerics.Tensors.TensorPrimitives.Max(values);
                float scale = (max - min) / 15f;
                result.Scales[o * groups + g] = scale;
                result.Mins[o * groups + g] = min;
                for (int i = 0; i < values.Length; i++)
                    Nibbles.Set(result.Packed, start + i, QuantizeValue(values[i], min, scale));
            }
        }
        return result;
    }

    /// <summary><c>clamp(round_half_even((w − min) / scale), 0, 15)</c> in float32; 0 when <paramref name="scale"/> is 0.</summary>
    public static int QuantizeValue(float w, float min, float scale)
    {
        if (scale == 0f) return 0;
        float q = MathF.Round((w - min) / scale, MidpointRounding.ToEven);
        return (int)Math.Clamp(q, 0f, 15f);
    }

    /// <summary>Dequantizes into <paramref name="destination"/> (row-major, length ≥ Out*In); see <see cref="Int4GroupQuantized"/>.</summary>
    public static void Dequantize(Int4GroupQuantized q, Span<float> destination)
    {
        if (destination.Length < q.Count)
            throw new ArgumentException($"destination holds {destination.Length} values, {q.Count} needed", nameof(destination));
        int groups = q.GroupsPerRow;
        for (int o = 0; o < q.OutFeatures; o++)
        {
            for (int i = 0; i < q.InFeatures; i++)
            {
                long e = (long)o * q.InFeatures + i;
                int group = o * groups + i / q.GroupSize;
                float scaled = q.Scales[group] * Nibbles.Get(q.Packed, e);
                destination[(int)e] = scaled + q.Mins[group];
            }
        }
    }
}
