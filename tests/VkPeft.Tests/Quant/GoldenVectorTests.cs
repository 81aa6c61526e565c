// The bitsandbytes NF4 + double-quantization reference vectors (Fixtures/nf4_golden.json) reproduced byte for byte.
using System.Text.Json;
using VkPeft.Quant;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Quant;

public class GoldenVectorTests
{
    private static readonly Lazy<JsonDocument> Golden = new(() =>
        JsonDocument.Parse(File.ReadAllText(SharedData.Fixture("nf4_golden.json"))));

    private static JsonElement Root => Golden.Value.RootElement;

    private static float[] Floats(JsonElement array) => [.. array.EnumerateArray().Select(e => (float)e.GetDouble())];

    public static TheoryData<int> Cases => new() { 0, 1 };

    [Fact]
    public void Nf4CodebookMatchesReference() =>
        QuantTestData.BitEqual(Floats(Root.GetProperty("nf4_code")), FourBitCodebooks.Nf4, "nf4_code");

    [Fact]
    public void DynamicMapMatchesReferenceBitForBit() =>
        QuantTestData.BitEqual(Floats(Root.GetProperty("dynamic_map_signed")), DynamicMap.Signed, "dynamic_map_signed");

    [Fact]
    public void Nf4MidpointsAreWithinOneUlpOfTheCodebookMidpoints()
    {
        // CUDA's literals are double midpoints rounded to float; a few differ by one ulp from (a + b) / 2f.
        for (int k = 0; k < 15; k++)
        {
            float fromCodes = (FourBitCodebooks.Nf4[k] + FourBitCodebooks.Nf4[k + 1]) / 2f;
            float literal = FourBitCodebooks.Nf4Midpoints[k];
            Assert.True(literal == fromCodes || literal == MathF.BitIncrement(fromCodes) || literal == MathF.BitDecrement(fromCodes),
                $"midpoint {k}: {literal:R} vs {fromCodes:R}");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void QuantizeReproducesPackedBytesAndAbsmax(int caseIndex)
    {
        var c = Root.GetProperty("cases")[caseIndex];
        float[] input = Floats(c.GetProperty("input_f32"));
        var q = Bnb4BitCodec.Quantize(input, 64, QuantType.Nf4, "golden");

        Assert.Equal(c.GetProperty("packed_hex").GetString(), Convert.ToHexStringLower(q.Packed));
        QuantTestData.BitEqual(Floats(c.GetProperty("absmax_f32")), q.Absmax, "absmax");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DoubleQuantReproducesCodesNestedAbsmaxAndOffset(int caseIndex)
    {
        var c = Root.GetProperty("cases")[caseIndex];
        var dq = DoubleQuant.Quantize(Floats(c.GetProperty("absmax_f32")));

        Assert.Equal(c.GetProperty("absmax_q_u8").EnumerateArray().Select(e => (byte)e.GetInt32()).ToArray(), dq.Codes);
        QuantTestData.BitEqual(Floats(c.GetProperty("nested_absmax_f32")), dq.NestedAbsmax, "nested_absmax");
        QuantTestData.BitEqual([(float)c.GetProperty("offset_f32").GetDouble()], [dq.Offset], "offset");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EndToEndDequantizationReproducesReferenceValues(int caseIndex)
    {
        var c = Root.GetProperty("cases")[caseIndex];
        int[] shape = [.. c.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
        var weight = QuantizedLinearWeight.Bnb4Bit(Floats(c.GetProperty("input_f32")), shape[0], shape[1]);

        Assert.Null(weight.Absmax);
        Assert.NotNull(weight.QuantizedAbsmax);
        QuantTestData.BitEqual(Floats(c.GetProperty("dequantized_f32")), weight.Dequantize(), "dequantized");
    }

    [Fact]
    public void AllZeroBlockInReferenceGetsZeroAbsmaxAndCodeOfZero()
    {
        // Case 1, block 1 is all zeros: absmax 0, every code 7 (NF4 0.0), dequantized 0 although its DQ absmax is not 0.
        var c = Root.GetProperty("cases")[1];
        var q = Bnb4BitCodec.Quantize(Floats(c.GetProperty("input_f32")));
        Assert.Equal(0f, q.Absmax[1]);
        Assert.All(q.Packed.AsSpan(32, 32).ToArray(), b => Assert.Equal(0x77, b));
    }
}
