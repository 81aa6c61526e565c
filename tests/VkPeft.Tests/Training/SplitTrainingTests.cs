// A whole training step whose activations span several bindings (a long sequence on a device with small bindings, as
// Llama-3.1-8B at 9,548 tokens is on lavapipe's 128 MiB): every kernel of forward, loss and backward splits, and the
// gradients agree with the same step on a context where everything fits one binding.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class SplitTrainingTests
{
    private static Dictionary<string, float[]> Gradients(VulkanContext ctx, string method, bool offload, int seqLen, out double loss)
    {
        var (c, w) = TinyModels.Random(31, dim: 32, hidden: 48, layers: 2, vocab: 37);
        var bq = method == "qalora" ? BaseQuant.Parse("int4", 8) : BaseQuant.Parse("nf4-dq");
        var cfg = new AdapterConfig
        {
            Method = method == "qalora" ? PeftMethod.QaLora : PeftMethod.Lora,
            Settings = (method == "qalora" ? new QaLoraSettings { GroupSize = 8 } : new LoraSettings()) with { Rank = 2, Alpha = 4, Dropout = method == "lora-dropout" ? 0.1f : 0 },
            BaseQuant = bq,
        };
        using var model = DeviceLlama.Load(ctx, c, w, bq);
        using var p = new TrainableParameters(ctx, withOptimizer: true, offload ? MemoryPlace.Host : MemoryPlace.Device);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        foreach (var (name, t) in p.ByName)
            if (name.EndsWith("lora_b", StringComparison.Ordinal)) t.Param.Upload<float>(TestData.Normal((int)t.Param.Count, 5, 0.3f));
        using var lora = new LoraRuntime(ctx, c, cfg, p, maxRows: seqLen);
        using var step = new TrainStep(model, lora, batch: 1, seqLen, checkpointing: true, logitRows: 96, offloadCheckpoints: offload);
        var rng = new Random(7);
        var ids = Enumerable.Range(0, seqLen).Select(_ => rng.Next(c.VocabSize)).ToArray();
        var targets = Enumerable.Range(0, seqLen).Select(i => i % 11 == 3 ? -1 : rng.Next(c.VocabSize)).ToArray();
        loss = step.Run(ids, targets, 1f / seqLen, seed: 2);
        return p.ByName.ToDictionary(kv => kv.Key, kv => kv.Value.Grad!.ToArray<float>());
    }

    [Theory]
    [InlineData("lora", true)]
    [InlineData("lora-dropout", false)]
    [InlineData("qalora", true)]
    public void StepWithActivationsOverManyBindingsMatchesOneBinding(string method, bool offload) =>
        StepsMatch(method, offload, flash: false);

    /// <summary>The same with the flash attention kernels (GPUs' choice) in both steps.</summary>
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void FlashStepWithActivationsOverManyBindingsMatchesOneBinding() => StepsMatch("lora", offload: false, flash: true);

    private static void StepsMatch(string method, bool offload, bool flash)
    {
        const int seqLen = 700;   // [700, 32] fp32 = 88 KB and [700, 48] = 131 KB: over the 64 KiB bindings
        using var split = new VulkanContext(SplitDeviceTests.SplitOptions());
        using var whole = new VulkanContext(GpuFixture.Options());
        using var flashSplit = flash ? VkPeft.Runtime.Kernels.Attention.Force(split, AttentionAlgorithm.Flash) : null;
        using var flashWhole = flash ? VkPeft.Runtime.Kernels.Attention.Force(whole, AttentionAlgorithm.Flash) : null;
        var gs = Gradients(split, method, offload, seqLen, out double lossSplit);
        var gw = Gradients(whole, method, offload, seqLen, out double lossWhole);
        // Same math, other summation orders (attention key chunks, row pieces of the weight-gradient sums): fp32 rounding only.
        Assert.Equal(lossWhole, lossSplit, 1e-3 * Math.Abs(lossWhole));
        foreach (var (name, g) in gw)
        {
            double scale = g.Max(x => Math.Abs(x));
            Assert.True(scale > 0, $"{name}: zero gradient");
            var s = gs[name];
            for (int i = 0; i < g.Length; i++)
                Assert.True(Math.Abs(s[i] - g[i]) <= 1e-4 * scale, $"{name}[{i}]: split {s[i]} vs whole {g[i]} (scale {scale})");
        }
    }
}
