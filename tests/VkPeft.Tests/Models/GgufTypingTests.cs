// GGUF metadata typed as llama.cpp's loader types it: each llama.* key (and each special-token key) it reads must have
// exactly its GGUF type (u32 counts and ids, f32 eps and RoPE values, str, bool); any other width is a one-line error
// naming the file and the key, as llama.cpp refuses it. The per-layer keys also take llama.cpp's per-layer arrays.
using VkPeft.Cli;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Tests.Training;

namespace VkPeft.Tests.Models;

public sealed class GgufTypingTests
{
    // GGUF value type ids.
    private const uint U8 = 0, U16 = 2, I32 = 5, U32 = 4, F32 = 6, Bool = 7, Str = 8, Arr = 9, U64 = 10, I64 = 11, F64 = 12;

    private static readonly Lazy<(LlamaConfig Config, LlamaWeights Weights)> Tiny = new(() => TinyModels.Random(43, layers: 2));

    private static TestWriters.Gguf Model() => TestWriters.StoriesGguf(Tiny.Value.Config, Tiny.Value.Weights,
        Enumerable.Range(0, Tiny.Value.Config.VocabSize).Select(i => ($"t{i}", 0f)).ToList());

    private static LoadedModel Load(TestWriters.Gguf g, TempDir dir)
    {
        string path = dir.File("typed.gguf");
        g.Write(path);
        return ModelLoader.Load(path);
    }

    private static ModelFormatException Refused(TestWriters.Gguf g, string key, string expected)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ModelFormatException>(() => Load(g, dir));
        Assert.Equal(key, e.Field);
        Assert.Contains("typed.gguf", e.Message);
        Assert.Contains(expected, e.Message);
        string? line = CliApp.UserError(e);
        Assert.NotNull(line);
        Assert.DoesNotContain('\n', line);
        return e;
    }

    public static TheoryData<string, uint, string> OtherWidths() => new()
    {
        { "llama.context_length", I32, "i32" },
        { "llama.context_length", U64, "u64" },
        { "llama.embedding_length", U16, "u16" },
        { "llama.block_count", I64, "i64" },
        { "llama.feed_forward_length", I32, "i32" },
        { "llama.attention.head_count", U64, "u64" },
        { "llama.attention.head_count_kv", U8, "u8" },
        { "llama.rope.dimension_count", I32, "i32" },
        { "llama.attention.key_length", U64, "u64" },
        { "llama.vocab_size", I32, "i32" },
        { "tokenizer.ggml.bos_token_id", I32, "i32" },
        { "tokenizer.ggml.eos_token_id", U64, "u64" },
    };

    [Theory]
    [MemberData(nameof(OtherWidths))]
    public void AnIntegerKeyOfAnotherWidthIsRefused(string key, uint type, string typeName)
    {
        uint value = key switch
        {
            "llama.context_length" => 64, "llama.embedding_length" => 32, "llama.block_count" => 2, "llama.feed_forward_length" => 48,
            "llama.attention.head_count" => 4, "llama.attention.head_count_kv" => 2, "llama.rope.dimension_count" or "llama.attention.key_length" => 8,
            "llama.vocab_size" => 37, "tokenizer.ggml.bos_token_id" => 1, _ => 2,
        };
        // The same number, correctly typed, loads: only the width is wrong.
        using (var dir = new TempDir())
            Load(Model().Set(key, U32, w => w.Write(value)), dir);
        var g = Model().Set(key, type, w =>
        {
            switch (type)
            {
                case U8: w.Write((byte)value); break;
                case U16: w.Write((ushort)value); break;
                case I32: w.Write((int)value); break;
                default: w.Write((ulong)value); break;
            }
        });
        Refused(g, key, $"has GGUF type {typeName} but must be u32");
    }

    [Theory]
    [InlineData("llama.attention.layer_norm_rms_epsilon", 1e-5)]
    [InlineData("llama.rope.freq_base", 10000.0)]
    public void AFloatKeyAsFloat64IsRefused(string key, double value) =>
        Refused(Model().Set(key, F64, w => w.Write(value)), key, "has GGUF type f64 but must be f32");

    [Fact]
    public void RopeScalingFactorMustBeFloat32AndTheTypeAString()
    {
        var linear = Model().Set("llama.rope.scaling.type", Str, w => WriteString(w, "linear"));
        using (var dir = new TempDir())
            Assert.Equal(2.0, Load(linear.Set("llama.rope.scaling.factor", F32, w => w.Write(2f)), dir).Config.RopeScaling!.Factor);
        Refused(Model().Set("llama.rope.scaling.type", Str, w => WriteString(w, "linear")).Set("llama.rope.scaling.factor", U32, w => w.Write(2u)),
            "llama.rope.scaling.factor", "has GGUF type u32 but must be f32");
        Refused(Model().Set("llama.rope.scaling.type", U32, w => w.Write(1u)), "llama.rope.scaling.type", "has GGUF type u32 but must be string");
    }

    [Fact]
    public void AddSpacePrefixMustBeABool()
    {
        using (var dir = new TempDir())
            Load(Model().Set("tokenizer.ggml.add_space_prefix", Bool, w => w.Write((byte)0)), dir);
        Refused(Model().Set("tokenizer.ggml.add_space_prefix", U8, w => w.Write((byte)0)), "tokenizer.ggml.add_space_prefix", "has GGUF type u8 but must be bool");
    }

    [Fact]
    public void PerLayerArraysAreAcceptedWhenAllLayersAreAlike()
    {
        // llama.cpp reads the FFN width and head counts as a u32 or an array of block_count u32/i32 elements.
        var g = Model()
            .Set("llama.feed_forward_length", Arr, w => WriteArray(w, U32, [48, 48]))
            .Set("llama.attention.head_count", Arr, w => WriteArray(w, I32, [4, 4]))
            .Set("llama.attention.head_count_kv", Arr, w => WriteArray(w, U32, [2, 2]));
        using var dir = new TempDir();
        var c = Load(g, dir).Config;
        Assert.Equal((48, 4, 2), (c.HiddenDim, c.NHeads, c.NKvHeads));

        Refused(Model().Set("llama.attention.head_count_kv", Arr, w => WriteArray(w, U32, [2, 4])), "llama.attention.head_count_kv", "per-layer values differ");
        Refused(Model().Set("llama.feed_forward_length", Arr, w => WriteArray(w, U32, [48, 48, 48])), "llama.feed_forward_length",
            "has 3 per-layer values but block_count is 2");
        Refused(Model().Set("llama.attention.head_count", Arr, w => WriteArray(w, F32, [4, 4])), "llama.attention.head_count",
            "has GGUF type arr[f32] but must be u32 or a per-layer array of u32");
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] b = System.Text.Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteArray(BinaryWriter w, uint elementType, uint[] values)
    {
        w.Write(elementType);
        w.Write((ulong)values.Length);
        foreach (uint v in values)
        {
            if (elementType == F32) w.Write((float)v);
            else w.Write(v);
        }
    }
}
