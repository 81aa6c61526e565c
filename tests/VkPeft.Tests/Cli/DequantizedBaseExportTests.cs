// The base an adapter pairs with: `export --merge-from dequantized --quant Q` without an adapter writes the base
// dequantized from Q (what a QLoRA adapter trained against), and a GGUF LoRA export says so and prints that command.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Tests.Export;
using VkPeft.Tests.Models;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Cli;

[Collection("cli")]
public sealed class DequantizedBaseExportTests
{
    private static string Model => SharedData.Stories260K("stories260K.bin");

    [Fact]
    public void WithoutAnAdapterTheDequantizedBaseIsWrittenBitForBit()
    {
        using var dir = new TempDir();
        string path = dir.File("base.gguf");
        var (code, _, err) = CliTests.Run("export", "--model", Model, "--format", "gguf", "--merge-from", "dequantized", "--quant", "nf4-dq", "--out", path);
        Assert.True(code == 0, $"export failed: {err}");

        var source = ExportTestSupport.Base;
        var back = ModelLoader.Load(path);
        var c = source.Config;
        for (int layer = 0; layer < c.NLayers; layer++)
        {
            var (outF, inF) = c.LinearShape(TargetModule.Down);   // [dim, hidden]
            float[] expected = AdapterMerge.TrainedBase(new BaseQuant("nf4-dq", 64), source.Weights.Layers[layer].WDown, outF, inF, "w2");
            Assert.True(expected.AsSpan().SequenceEqual(back.Weights.Layers[layer].WDown),
                $"layer {layer} w2: the exported base is not the NF4+DQ-dequantized original bit for bit");
            Assert.False(source.Weights.Layers[layer].WDown.AsSpan().SequenceEqual(back.Weights.Layers[layer].WDown),
                $"layer {layer} w2: the exported base equals the original weights, not the dequantized ones");
        }
        Assert.True(source.Weights.TokenEmbedding.AsSpan().SequenceEqual(back.Weights.TokenEmbedding),
            "the token embedding is not a linear the adapter trained against and must stay as it was");
    }

    [Fact]
    public void MergeFromDequantizedWithoutAnAdapterNeedsTheQuantization()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliTests.Run("export", "--model", Model, "--format", "gguf", "--merge-from", "dequantized", "--out", dir.File("m.gguf"));
        Assert.True(code != 0, "an explicit --merge-from dequantized without --adapter or --quant must be refused");
        Assert.Contains("--quant", err, StringComparison.Ordinal);
        Assert.False(File.Exists(dir.File("m.gguf")), "nothing is written on a usage error");
    }

    [Fact]
    public void GgufLoraExportNamesTheBaseItPairsWith()
    {
        using var dir = new TempDir();
        string adapterDir = dir.File("adapter");
        var adapter = ExportTestSupport.RandomLora(ExportTestSupport.Base.Config, seed: 5, baseQuant: new BaseQuant("nf4-dq", 64));
        AdapterIO.SaveVkPeft(adapterDir, adapter, ExportTestSupport.Base.Config, force: false);
        var (code, output, err) = CliTests.Run("export", "--model", Model, "--adapter", adapterDir, "--format", "gguf-lora", "--out", dir.File("lora.gguf"));
        Assert.True(code == 0, $"export failed: {err}");
        Assert.Contains("dequantized from nf4-dq", output, StringComparison.Ordinal);
        Assert.Contains("--format gguf --merge-from dequantized --quant nf4-dq --blocksize 64", output, StringComparison.Ordinal);
    }
}
