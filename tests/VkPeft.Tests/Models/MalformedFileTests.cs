// Malformed and unsupported model files fail with ModelFormatException naming the file and the field at fault.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;

namespace VkPeft.Tests.Models;

public sealed class MalformedFileTests
{
    private static void AssertNames(ModelFormatException e, string file, string field)
    {
        Assert.Contains(Path.GetFileName(file), e.Message);
        Assert.Contains(field, e.Message);
        Assert.Contains(field, e.Field);
    }

    private static TestWriters.Gguf Gguf() => TestWriters.StoriesGguf(Stories260K.Config, Stories260K.Weights,
        Enumerable.Range(0, 512).Select(i => ($"t{i}", 0f)).ToList());

    [Fact]
    public void GgufWrongMagic()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.gguf");
        var g = Gguf();
        g.Magic = 0x58554747; // "GGUX"
        g.Write(path);
        AssertNames(Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path)), path, "magic");
    }

    [Fact]
    public void Llama2cTruncated()
    {
        using var dir = new TempDir();
        string path = dir.File("cut.bin");
        byte[] bytes = File.ReadAllBytes(Stories260K.ModelPath);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cCheckpoint.Read(path));
        AssertNames(e, path, "w");
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void SafetensorsTruncated()
    {
        using var dir = new TempDir();
        TestWriters.WriteHfFolder(dir.Path, Stories260K.Config, Stories260K.Weights);
        string st = dir.File("model.safetensors");
        byte[] bytes = File.ReadAllBytes(st);
        File.WriteAllBytes(st, bytes[..^100]);
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(e, st, "model.norm.weight");
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void GgufTruncated()
    {
        using var dir = new TempDir();
        string path = dir.File("cut.gguf");
        Gguf().Write(path);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^100]);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path));
        AssertNames(e, path, "output_norm.weight");
        File.WriteAllBytes(path, bytes[..100]);
        e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("cut.gguf", e.Message);
    }

    [Fact]
    public void SafetensorsOffsetsDoNotTile()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(Stories260K.Config));
        string st = dir.File("model.safetensors");
        var tensors = TestWriters.HfTensors(Stories260K.Config, Stories260K.Weights)
            .Select(t => (t.Name, "F32", t.Shape, TestWriters.Encode(t.Data, "F32"))).ToList();
        // Shift one tensor by 4 bytes: a hole before it and an overlap after it.
        TestWriters.WriteSafetensors(st, tensors, (name, b, e) => name == "model.layers.2.mlp.up_proj.weight" ? (b + 4, e + 4) : (b, e));
        var ex = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(ex, st, "model.layers.2.mlp.up_proj.weight");
        Assert.Contains("tile", ex.Message);

        // Duplicate keys and wrong byte counts are rejected too.
        TestWriters.WriteSafetensors(st, [("a", "F32", [2], new byte[8]), ("a", "F32", [2], new byte[8])]);
        AssertNames(Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(st)), st, "a");
        TestWriters.WriteSafetensors(st, [("b", "F16", [3], new byte[8])]);
        AssertNames(Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(st)), st, "b");
    }

    [Fact]
    public void GgufOffsetsDoNotTile()
    {
        using var dir = new TempDir();
        string path = dir.File("holes.gguf");
        var g = Gguf();
        g.OffsetOverride = (i, off) => i == 3 ? off + 32 : off;
        g.Write(path);
        var e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(path));
        AssertNames(e, path, "blk.0.attn_k.weight");
        Assert.Contains("tile", e.Message);
    }

    [Fact]
    public void HfShapeMismatch()
    {
        using var dir = new TempDir();
        TestWriters.WriteHfFolder(dir.Path, Stories260K.Config, Stories260K.Weights);
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(Stories260K.Config, intermediate: 170));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(e, dir.File("model.safetensors"), "model.layers.0.mlp.gate_proj.weight");
        Assert.Contains("[172, 64]", e.Message);
        Assert.Contains("[170, 64]", e.Message);
    }

    [Fact]
    public void MissingTensor()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(Stories260K.Config));
        string st = dir.File("model.safetensors");
        TestWriters.WriteSafetensors(st, TestWriters.HfTensors(Stories260K.Config, Stories260K.Weights)
            .Where(t => t.Name != "model.layers.3.self_attn.k_proj.weight")
            .Select(t => (t.Name, "F32", t.Shape, TestWriters.Encode(t.Data, "F32"))));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(e, st, "model.layers.3.self_attn.k_proj.weight");
        Assert.Contains("missing", e.Message);

        using var dir2 = new TempDir();
        string path = dir2.File("renamed.gguf");
        Gguf().Write(path);
        // Rename one tensor so the one the config needs is absent.
        byte[] bytes = File.ReadAllBytes(path);
        byte[] from = System.Text.Encoding.UTF8.GetBytes("blk.4.ffn_up.weight");
        byte[] to = System.Text.Encoding.UTF8.GetBytes("blk.4.ffn_xx.weight");
        int at = bytes.AsSpan().IndexOf(from);
        to.CopyTo(bytes, at);
        File.WriteAllBytes(path, bytes);
        AssertNames(Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path)), path, "blk.4.ffn_up.weight");
    }

    [Fact]
    public void UnsupportedDtype()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(Stories260K.Config));
        string st = dir.File("model.safetensors");
        TestWriters.WriteSafetensors(st, TestWriters.HfTensors(Stories260K.Config, Stories260K.Weights)
            .Select(t => (t.Name, t.Name == "model.norm.weight" ? "I32" : "F32", t.Shape, TestWriters.Encode(t.Data, "F32"))));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(e, st, "model.norm.weight");
        Assert.Contains("I32", e.Message);

        TestWriters.WriteSafetensors(st, [("x", "F7", [4], new byte[4])]);
        e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(st));
        AssertNames(e, st, "x");
        Assert.Contains("F7", e.Message);

        string gg = dir.File("q4k.gguf");
        var f = new TestWriters.Gguf().String("general.architecture", "llama");
        f.Tensor("w", [2, 32], new float[64]);
        f.Write(gg);
        byte[] bytes = File.ReadAllBytes(gg);
        // Tensor info: name "w", u32 n_dims = 2, two u64 dims, then the u32 type id.
        int info = bytes.AsSpan().IndexOf("w"u8.ToArray().Concat(BitConverter.GetBytes(2u)).ToArray());
        int typeOffset = info + 1 + 4 + 16;
        BitConverter.GetBytes(99u).CopyTo(bytes, typeOffset);
        File.WriteAllBytes(gg, bytes);
        e = Assert.Throws<ModelFormatException>(() => GgufFile.Open(gg));
        AssertNames(e, gg, "w");
        Assert.Contains("99", e.Message);
    }

    [Fact]
    public void UnsupportedArchitecture()
    {
        using var dir = new TempDir();
        TestWriters.WriteHfFolder(dir.Path, Stories260K.Config, Stories260K.Weights);
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(Stories260K.Config, modelType: "gpt_neox"));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path));
        AssertNames(e, dir.File("config.json"), "model_type");
        Assert.Contains("gpt_neox", e.Message);

        string path = dir.File("falcon.gguf");
        new TestWriters.Gguf().String("general.architecture", "falcon").Write(path);
        e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path));
        AssertNames(e, path, "general.architecture");
        Assert.Contains("falcon", e.Message);
    }

    [Fact]
    public void TokenizerVocabMismatch()
    {
        var e = Assert.Throws<ModelFormatException>(() => Llama2cTokenizer.Load(Stories260K.TokenizerPath, 500));
        AssertNames(e, Stories260K.TokenizerPath, "vocab_size");
        e = Assert.Throws<ModelFormatException>(() => Llama2cTokenizer.Load(Stories260K.TokenizerPath, 600));
        AssertNames(e, Stories260K.TokenizerPath, "vocab_size");

        using var dir = new TempDir();
        string path = dir.File("short-vocab.gguf");
        TestWriters.StoriesGguf(Stories260K.Config, Stories260K.Weights,
            Enumerable.Range(0, 500).Select(i => ($"t{i}", 0f)).ToList()).U32("llama.vocab_size", 512).Write(path);
        e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path));
        AssertNames(e, path, "tokenizer.ggml.tokens");
    }

    [Fact]
    public void ConfigValidationNamesField()
    {
        var bad = Stories260K.Config with { NKvHeads = 3 };
        var e = Assert.Throws<ModelFormatException>(() => bad.Validate("cfg"));
        Assert.Equal("n_kv_heads", e.Field);
        e = Assert.Throws<ModelFormatException>(() => (Stories260K.Config with { RopeScaling = new RopeScaling("yarn", 2) }).Validate("cfg"));
        Assert.Contains("yarn", e.Message);
    }
}
