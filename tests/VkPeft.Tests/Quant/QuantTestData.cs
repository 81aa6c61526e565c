// Seeded test inputs and float comparison helpers for the quantization tests.
using System.Text.Json;
using VkPeft.Quant;

namespace VkPeft.Tests.Quant;

internal static class QuantTestData
{
    /// <summary>n samples of N(0, 1) from a seeded Box–Muller generator (deterministic across runs).</summary>
    public static float[] Gaussian(int n, int seed)
    {
        var random = new Random(seed);
        var values = new float[n];
        for (int i = 0; i < n; i += 2)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            double radius = Math.Sqrt(-2.0 * Math.Log(u1));
            values[i] = (float)(radius * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < n) values[i + 1] = (float)(radius * Math.Sin(2 * Math.PI * u2));
        }
        return values;
    }

    public static double MeanAbsError(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double sum = 0;
        for (int i = 0; i < expected.Length; i++) sum += Math.Abs((double)expected[i] - actual[i]);
        return sum / expected.Length;
    }

    private static readonly Lazy<float[]> BnbDynamicMapLazy = new(() =>
    [
        .. File.ReadAllLines(Support.SharedData.Fixture("bnb_dynamic_map.txt"))
            .Where(line => line.Length > 0 && !line.StartsWith('#'))
            .Select(line => BitConverter.UInt32BitsToSingle(Convert.ToUInt32(line, 16))),
    ]);

    /// <summary>bitsandbytes' float32 dynamic map as published (Fixtures/bnb_dynamic_map.txt), 256 entries.</summary>
    public static float[] BnbDynamicMap => BnbDynamicMapLazy.Value;

    /// <summary>
    /// nf4_golden.json case <paramref name="caseIndex"/> dequantized under bitsandbytes' float32 semantics: its packed
    /// NF4 codes scaled by the absmax restored from nf4_dq_bnb_golden.json's codes, nested absmax and offset through
    /// the published map (Fixtures/bnb_dynamic_map.txt) — built from the fixtures alone, not from vkpeft's quantizer.
    /// </summary>
    public static float[] BnbSemanticsDequantized(int caseIndex)
    {
        using var reference = JsonDocument.Parse(File.ReadAllText(Support.SharedData.Fixture("nf4_golden.json")));
        using var bnbGolden = JsonDocument.Parse(File.ReadAllText(Support.SharedData.Fixture("nf4_dq_bnb_golden.json")));
        var c = reference.RootElement.GetProperty("cases")[caseIndex];
        var bnb = bnbGolden.RootElement.GetProperty("cases")[caseIndex];
        var golden = new DoubleQuantized(Convert.FromHexString(bnb.GetProperty("absmax_q_hex").GetString()!),
            [.. bnb.GetProperty("nested_absmax_f32_bits").EnumerateArray().Select(e => FromBits(e.GetString()!))],
            FromBits(bnb.GetProperty("offset_f32_bits").GetString()!));
        var absmax = new float[golden.Count];
        DoubleQuant.Dequantize(golden, BnbDynamicMap, absmax);
        int count = c.GetProperty("input_f32").GetArrayLength();
        var expected = new float[count];
        Bnb4BitCodec.Dequantize(Convert.FromHexString(c.GetProperty("packed_hex").GetString()!), absmax, count, 64, QuantType.Nf4, expected);
        return expected;
    }

    /// <summary>A float32 from its hex bit pattern ("3d523e27").</summary>
    public static float FromBits(string hex) => BitConverter.UInt32BitsToSingle(Convert.ToUInt32(hex, 16));

    /// <summary>Asserts two float arrays are identical bit for bit, naming the first differing index.</summary>
    public static void BitEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
                Assert.Fail($"{what}[{i}]: expected {expected[i]:R} (0x{BitConverter.SingleToUInt32Bits(expected[i]):X8}), got {actual[i]:R} (0x{BitConverter.SingleToUInt32Bits(actual[i]):X8})");
        }
    }
}
