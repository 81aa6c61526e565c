// Prefix tuning on the device (grouped-query tiny model: 4 query heads over 2 key/value heads): the GPU gradient of
// every prefix key and value against float64 central differences of the reference forward with the joined prefix
// (real tokens at positions P…), checkpointing on and off, on an NF4+DQ base; the invariant that a prefix copied from
// real tokens' cached keys and values equals running the base with those tokens (on the real tokens' logits); and
// generation with the prefix held once in the KV cache against the reference.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prefix;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.Prompt;

[Collection("gpu")]
public sealed class PrefixTuningGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(int n, string quant = "nf4-dq") => new()
    {
        Method = PeftMethods.Get("prefix"), Targets = [], BaseQuant = BaseQuant.Parse(quant), Settings = new PrefixSettings(n),
    };

    private static double[][] RowsOf(double[] flat, int rows) => [.. Enumerable.Range(0, rows).Select(r => flat.AsSpan(r * (flat.Length / rows), flat.Length / rows).ToArray())];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PrefixGradientsMatchFloat64FiniteDifferences(bool checkpointing)
    {
        var (c, w) = TinyModels.Random(23);
        Assert.NotEqual(c.NHeads, c.NKvHeads);
        const int n = 3;
        var cfg = Config(n);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        Assert.Equal(2 * c.NLayers, p.ByName.Count);
        var host = new Dictionary<string, double[]>();
        int seed = 40;
        foreach (var (name, t) in p.ByName)
        {
            Assert.Equal(new long[] { n, c.KvDim }, t.Shape);
            var v = TestData.Normal((int)t.Param.Count, seed++, 0.7f);
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int count = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / count, seed: 1);

        reference.AttentionPrefix = l => (RowsOf(host[PrefixMethod.KeysName(l)], n), RowsOf(host[PrefixMethod.ValuesName(l)], n), null);
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / count - Loss()) < 1e-4, $"loss {gpuLoss / count} vs reference {Loss()}");
        foreach (var (name, t) in p.ByName)
        {
            var g = t.Grad!.ToArray<float>();
            Assert.True(g.Any(x => x != 0), $"{name} received no gradient");
            FiniteDifference.AssertMatches(name, g, host[name], Loss);
        }
    }

    // The prefix is u's cached keys (after RoPE at positions 0…P−1) and values at every layer, and the real tokens run at
    // positions P…: each real row sees exactly what it sees after u, so the logits agree to float32 rounding (1e-5 on
    // logits of order 1, for different row counts in the fused dispatches).
    [Fact]
    public void PrefixCopiedFromCachedKeysAndValuesEqualsRunningThoseTokens()
    {
        var (c, w) = TinyModels.Random(29);
        int[] u = [1, 7, 20, 3, 11];
        var cfg = Config(u.Length);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        using (var cacheRunner = new LlamaRunner(model, 1, u.Length, kvCache: true))
        {
            cacheRunner.Ids.RowsView(0, u.Length).Upload<int>(u);
            cacheRunner.Embed(u.Length);
            cacheRunner.Layers(1, u.Length);
            for (int l = 0; l < c.NLayers; l++)
            {
                var (k, v) = cacheRunner.KvCache(l)!.Value;
                p.ByName[PrefixMethod.KeysName(l)].Param.Upload<float>(k.ToArray<float>());
                p.ByName[PrefixMethod.ValuesName(l)].Param.Upload<float>(v.ToArray<float>());
            }
        }
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 9);
        int[][] xs = [[1, 5, 9, 2, 30, 7, 4, 8, 8], [7, 3, 36, 0, 11, 2, 2, 6, 19]];

        float[] withPrefix, prepended;
        using (var runner = new LlamaRunner(model, 2, 9, kvCache: false, adapter: runtime)) withPrefix = PromptTuningGradientTests.Logits(runner, xs, 0);
        using (var runner = new LlamaRunner(model, 2, 14, kvCache: false)) prepended = PromptTuningGradientTests.Logits(runner, [.. xs.Select(x => u.Concat(x).ToArray())], u.Length);
        TestData.Close(prepended, withPrefix, 1e-5, 0, "logits with the copied prefix vs with its tokens prepended");
    }

    // Generation: the prefix is written into the KV cache once (prefill), later tokens at positions P + t. Greedy
    // continuation on an fp32 base against the float64 reference with the same prefix.
    [Fact]
    public void GenerationHoldsThePrefixInTheCacheAndMatchesTheReference()
    {
        var (c, w) = TinyModels.Random(31);
        const int n = 4;
        var cfg = Config(n, "none");
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 5);
        var host = p.ByName.ToDictionary(kv => kv.Key, kv => kv.Value.Param.ToArray<float>().Select(x => (double)x).ToArray());
        var reference = new VkPeft.Peft.Models.ReferenceForward(c, w)
        {
            AttentionPrefix = l => (RowsOf(host[PrefixMethod.KeysName(l)], n), RowsOf(host[PrefixMethod.ValuesName(l)], n), null),
        };
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 20);
        using var runner = new LlamaRunner(model, 1, 20, kvCache: true, adapter: runtime);
        var generated = new Generator(runner).Generate([1, 5, 9], 12, new SamplingOptions());
        Assert.Equal(reference.GenerateGreedy([1, 5, 9], 12), generated);
    }
}
