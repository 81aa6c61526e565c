// Lossless means lossless: a QA-LoRA adapter merged into GGUF Q4_1 keeps the token embedding (tied classifier) at
// float32 (the precision the model ran with), so the file scores what base + adapter scores; --embeddings-dtype asks
// for another embedding dtype explicitly.
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Tests.Models;
using Xunit.Abstractions;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class LosslessEmbeddingExportTests(ITestOutputHelper output)
{
    /// <summary>Mean next-token NLL of the reference sentence under float64 logits.</summary>
    private static double Nll(double[][] logits)
    {
        var tokens = Tokens;
        double sum = 0;
        for (int t = 0; t + 1 < tokens.Length; t++)
        {
            double max = logits[t].Max(), z = logits[t].Sum(v => Math.Exp(v - max));
            sum += max + Math.Log(z) - logits[t][tokens[t + 1]];
        }
        return sum / (tokens.Length - 1);
    }

    [Fact]
    public void QaLoraToQ4_1ScoresAsBasePlusAdapter()
    {
        var c = Base.Config;
        var (adapter, _) = QaLoraForQ4_1(31);
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        Exporter.Export(Base, adapter, new ExportOptions { Format = ExportFormat.Gguf, DType = ExportDType.Q4_1, OutPath = path });

        // The independent reader: the embedding is stored as F32 (type 0) and decodes to the source's bits.
        var mini = MiniGguf.Read(path);
        var embd = mini.Infos.Single(t => t.Name == "token_embd.weight");
        Assert.True(embd.Type == 0, $"token_embd.weight is stored as GGML type {embd.Type}, expected F32 (0): the model ran with a float32 embedding");
        Assert.True(mini.Decode(embd).AsSpan().SequenceEqual(Base.Weights.TokenEmbedding), "token_embd.weight does not decode to the source embedding");
        Assert.True(mini.Infos.Single(t => t.Name == "blk.0.attn_q.weight").Type == 3, "the linear weights are Q4_1 (type 3)");

        // End to end: base + adapter (the INT4-dequantized base plus ΔW, float32) against the file as loaded back.
        // The linears differ only by the fp16 rounding of Q4_1's d and m (≤ 1e-2 absolute on these weights), which
        // moves the mean NLL by far less than 2e-3; a Q4_1 embedding moved it by 4e-2 on held-out stories.
        var basePlusAdapter = AdapterMerge.MergeDense(c, Base.Weights, adapter, MergeFrom.Dequantized);
        double reference = Nll(Logits(basePlusAdapter.Config, basePlusAdapter.Weights));
        double exported = Nll(Logits(ModelLoader.Load(path)));
        output.WriteLine($"QA-LoRA → GGUF Q4_1: NLL base+adapter {reference:F6}, exported {exported:F6}");
        Assert.True(Math.Abs(exported - reference) < 2e-3, $"exported NLL {exported:F6} vs base + adapter {reference:F6}: |Δ| ≥ 2e-3");
    }

    [Fact]
    public void EmbeddingsDTypeQuantizesTheEmbeddingOnlyWhenAsked()
    {
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        Exporter.Export(Base, null, new ExportOptions { Format = ExportFormat.Gguf, DType = ExportDType.F16, EmbeddingsDType = ExportDType.Q8_0, OutPath = path });
        var mini = MiniGguf.Read(path);
        Assert.True(mini.Infos.Single(t => t.Name == "token_embd.weight").Type == 8, "--embeddings-dtype q8_0 stores token_embd.weight as Q8_0 (8)");
        Assert.True(mini.Infos.Single(t => t.Name == "blk.0.attn_q.weight").Type == 1, "the linear weights follow --dtype f16 (1)");
        Assert.Throws<ExportException>(() => Exporter.Export(Base, null,
            new ExportOptions { Format = ExportFormat.Safetensors, EmbeddingsDType = ExportDType.Q8_0, OutPath = dir.File("hf") }));
    }
}
