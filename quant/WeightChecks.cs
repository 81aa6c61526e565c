// Argument checks shared by every codec: non-empty input, finite values (reported by tensor name and index).
using System.Numerics.Tensors;

namespace VkPeft.Quant;

internal static class WeightChecks
{
    public static void NotEmpty(int length, string tensorName)
    {
        if (length == 0)
            throw new ArgumentException($"tensor '{tensorName}' is empty; there is nothing to quantize", tensorName);
    }

    /// <summary>Checks that every value is finite (one vectorized pass); otherwise throws naming the first NaN/infinity's index.</summary>
    public static void AllFinite(ReadOnlySpan<float> values, string tensorName)
    {
        // MaxMagnitude propagates NaN and returns ±inf when present, so it is finite exactly when every value is.
        if (values.IsEmpty || float.IsFinite(TensorPrimitives.MaxMagnitude(values)))
            return;
        int index = 0;
        while (float.IsFinite(values[index])) index++;
        throw new ArgumentException(
            $"tensor '{tensorName}' has a non-finite value ({values[index]}) at flat index {index}; weights must be finite to be quantized",
            tensorName);
    }
}
