// The full model forward on the device against the independent float64 reference (shared/models/stories260K):
// logits at every position, mean NLL in fp32 and with the NF4+DQ base, and the exact greedy continuation.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Engine;

[Collection("gpu")]
public sealed class DeviceModelTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    internal static readonly Lazy<LoadedModel> Stories = new(() => ModelLoader.Load(SharedData.Stories260K("stories260K.bin")));
    internal static readonly Lazy<JsonElement> Reference = new(() =>
        JsonDocument.Parse(File.ReadAllText(SharedData.Fixture("stories260K_reference.json"))).RootElement);

    private static int[] Ints(string name) => [.. Reference.Value.GetProperty(name).EnumerateArray().Select(e => e.GetInt32())];

    [Fact]
    public void LogitsAndNllMatchTheFloat64Reference()
    {
        var m = Stories.Value;
        using var model = DeviceLlama.Load(Ctx, m.Config, m.Weights, BaseQuant.None);
        var ids = Ints("token_ids");
        using var runner = new LlamaRunner(model, 1, ids.Length, kvCache: false);
        var windows = Evaluator.Windows([ids], ids.Length);
        var result = Evaluator.Evaluate(runner, windows);
        // fp32 forward of a 5-layer model: ~1e-6 relative per op; the NLL of 15 tokens agrees to 1e-5 (the bar).
        Assert.InRange(result.MeanNll, Reference.Value.GetProperty("mean_nll_fp64").GetDouble() - 1e-5, Reference.Value.GetProperty("mean_nll_fp64").GetDouble() + 1e-5);
        Assert.Equal(ids.Length - 1, result.Tokens);

        // Logits at every position within 1e-4 absolute (values reach ±10; fp32 accumulation over dim 64 and 5 layers).
        runner.Ids.RowsView(0, ids.Length).Upload<int>(ids);
        runner.Embed(ids.Length);
        runner.Layers(1, ids.Length);
        runner.FinalNorm(ids.Length);
        var refLogits = Reference.Value.GetProperty("logits");
        var row = new float[m.Config.VocabSize];
        double worst = 0;
        for (int t = 0; t < ids.Length; t++)
        {
            runner.LogitsOf(t, 1).Download<float>(row);
            int j = 0;
            foreach (var e in refLogits[t].EnumerateArray()) worst = Math.Max(worst, Math.Abs(e.GetDouble() - row[j++]));
        }
        Assert.True(worst < 1e-4, $"max |logit error| {worst:G3}");
    }

    [Fact]
    public void Nf4DqBaseMatchesTheReferenceQuantizedNll()
    {
        var m = Stories.Value;
        using var model = DeviceLlama.Load(Ctx, m.Config, m.Weights, BaseQuant.Parse("nf4-dq"));
        var ids = Ints("token_ids");
        using var runner = new LlamaRunner(model, 1, ids.Length, kvCache: false);
        var result = Evaluator.Evaluate(runner, Evaluator.Windows([ids], ids.Length));
        double expected = Reference.Value.GetProperty("mean_nll_nf4_dq").GetDouble();
        Assert.InRange(result.MeanNll, expected - 1e-4, expected + 1e-4);
        // 7 linear kinds at NF4+DQ: the device bytes of those weights.
        Assert.InRange(8.0 * model.LinearBytes / model.LinearParams, 4.12, 4.25);   // small matrices: partial nested blocks
    }

    [Fact]
    public void QuantizedEmbeddingAndClassifierMatchTheReferenceWithTheSameTable()
    {
        var m = Stories.Value;
        var embQuant = BaseQuant.Parse("nf4-dq");
        using var model = DeviceLlama.Load(Ctx, m.Config, m.Weights, BaseQuant.None, embeddingQuant: embQuant);
        Assert.NotNull(model.Embedding.Quantized);
        Assert.Same(model.Embedding, model.Classifier);   // tied
        var table = VkPeft.Quant.QuantizedLinearWeight.Bnb4Bit(m.Weights.TokenEmbedding, m.Config.VocabSize, m.Config.Dim).Dequantize();
        var reference = new ReferenceForward(m.Config, new LlamaWeights
        {
            TokenEmbedding = table, Layers = m.Weights.Layers, FinalNorm = m.Weights.FinalNorm, Classifier = m.Weights.Classifier,
        });
        var ids = Ints("token_ids");
        using var runner = new LlamaRunner(model, 1, ids.Length, kvCache: false);
        var result = Evaluator.Evaluate(runner, Evaluator.Windows([ids], ids.Length));
        // The device decodes the same NF4+DQ table the reference uses: only fp32 vs float64 rounding remains.
        Assert.InRange(result.MeanNll, reference.MeanNll(ids) - 1e-5, reference.MeanNll(ids) + 1e-5);
        Assert.True(model.EmbeddingBytes * 8.0 / (m.Config.VocabSize * m.Config.Dim) < 4.2);
    }

    [Theory]
    [InlineData(AttentionAlgorithm.Auto)]
    [InlineData(AttentionAlgorithm.Flash)]   // the GPU attention kernels: prefill, then one query against the KV cache
    public void GreedyGenerationReproducesTheReferenceText(AttentionAlgorithm attention)
    {
        using var forced = attention == AttentionAlgorithm.Auto ? null : VkPeft.Runtime.Kernels.Attention.Force(Ctx, attention);
        var m = Stories.Value;
        using var model = DeviceLlama.Load(Ctx, m.Config, m.Weights, BaseQuant.None);
        using var runner = new LlamaRunner(model, 1, m.Config.MaxSeqLen, kvCache: true);
        var prompt = m.Tokenizer!.Encode(Reference.Value.GetProperty("greedy_prompt").GetString()!, bos: true);
        var expectedIds = Ints("greedy_token_ids");
        var ids = new Generator(runner).Generate(prompt, expectedIds.Length - prompt.Length, new SamplingOptions());
        Assert.Equal(expectedIds, ids);
        Assert.Equal(Reference.Value.GetProperty("greedy_text").GetString(), m.Tokenizer.Decode(ids));
    }
}
