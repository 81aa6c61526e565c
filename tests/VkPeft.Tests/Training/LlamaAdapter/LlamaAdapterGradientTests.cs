// LLaMA-Adapter on an NF4 + double-quantized base: the GPU gradient of every element of every adaption prompt and gate
// against float64 central differences of the reference forward with the gated prompt attention hooked in (prompt keys
// and values projected by the dequantized frozen k/v weights), with checkpointing on and off and with the top layer or
// every layer adapted; a zero gate leaves the base model's outputs exactly unchanged; and generation with a KV cache
// (prompt keys/values computed once) matches the reference token by token.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.LlamaAdapter;

[Collection("gpu")]
public sealed class LlamaAdapterGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(int len, int? layers) => new()
    {
        Method = PeftMethods.Get("llama-adapter"), Targets = [], Settings = new LlamaAdapterSettings(len, layers), BaseQuant = BaseQuant.Parse("nf4-dq"),
    };

    /// <summary>Random prompts (unit variance) and non-zero gates (a zero gate gives the prompts no gradient), uploaded and kept on the host.</summary>
    private static Dictionary<string, double[]> Randomize(TrainableParameters p)
    {
        var host = new Dictionary<string, double[]>();
        int seed = 200;
        foreach (var (name, t) in p.ByName)
        {
            var v = name.EndsWith("adaption_gate", StringComparison.Ordinal) ? [seed % 2 == 0 ? 0.6f : -0.45f] : TestData.Normal((int)t.Param.Count, seed, 1f);
            seed++;
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        return host;
    }

    /// <summary>The reference's gated prefix per adapted layer: K = P·Wkᵀ, V = P·Wvᵀ in float64 over the device's dequantized weights; the scalar gate for every head.</summary>
    private static void HookReference(ReferenceForward reference, DeviceLlama model, LlamaConfig c, AdapterConfig cfg, Dictionary<string, double[]> host)
    {
        int first = LlamaAdapterMethod.FirstLayer(cfg, c.NLayers);
        int len = LlamaAdapterMethod.Settings(cfg).AdapterLen;
        var wk = model.Layers.Select(l => l.Wk.DownloadDequantized()).ToArray();
        var wv = model.Layers.Select(l => l.Wv.DownloadDequantized()).ToArray();
        double[][] Project(double[] prompt, float[] w) => [.. Enumerable.Range(0, len).Select(j =>
            Enumerable.Range(0, c.KvDim).Select(o =>
            {
                double s = 0;
                for (int d = 0; d < c.Dim; d++) s += prompt[j * c.Dim + d] * w[(long)o * c.Dim + d];
                return s;
            }).ToArray())];
        reference.AttentionPrefix = l =>
        {
            if (l < first) return null;
            var prompt = host[LlamaAdapterMethod.PromptName(l)];
            double g = host[LlamaAdapterMethod.GateName(l)][0];
            return (Project(prompt, wk[l]), Project(prompt, wv[l]), Enumerable.Repeat(g, c.NHeads).ToArray());
        };
    }

    [Theory]
    [InlineData(3, 1, false)]
    [InlineData(3, 1, true)]
    [InlineData(5, null, true)]
    public void PromptAndGateGradientsMatchFloat64FiniteDifferences(int len, int? layers, bool checkpointing)
    {
        var (c, w) = TinyModels.Random(17);
        var cfg = Config(len, layers);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        var host = Randomize(p);
        using var runtime = (LlamaAdapterRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];
        int n = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / n, seed: 1);

        HookReference(reference, model, c, cfg, host);
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - Loss()) < 1e-4, $"loss {gpuLoss / n} vs reference {Loss()}");

        Assert.Equal(2 * (layers ?? c.NLayers), p.ByName.Count);
        foreach (var (name, t) in p.ByName)
        {
            FiniteDifference.AssertGradient(name, t.Grad!, host[name], Loss);
        }
    }

    // out = o + 0·a is o exactly, so a fresh adapter's logits equal the base's bit for bit.
    [Fact]
    public void ZeroGateLeavesTheBaseExactlyUnchanged()
    {
        var (c, w) = TinyModels.Random(5);
        var cfg = Config(4, null);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        Assert.All(p.ByName.Where(kv => kv.Key.EndsWith("adaption_gate", StringComparison.Ordinal)), kv => Assert.Equal(0f, kv.Value.Param.ToArray<float>()[0]));
        Assert.Contains(p.ByName.Values, t => t.Param.ToArray<float>().Any(x => x != 0));   // the prompts themselves are random
        using var runtime = (LlamaAdapterRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 7);
        Evaluator.Window[] windows = [new([1, 5, 9, 2, 30, 7, 4], [5, 9, 2, 30, 7, 4, 8]), new([7, 3, 36, 0, 11, 2, 2], [3, 36, 0, 11, 2, 2, 6])];
        double baseNll, adapterNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false)) baseNll = Evaluator.Evaluate(runner, windows).MeanNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false) { Adapter = runtime }) adapterNll = Evaluator.Evaluate(runner, windows).MeanNll;
        Assert.Equal(baseNll, adapterNll);
    }

    // A prompt prefill then single-token steps through the KV cache: the prompt keys/values are computed at the first
    // forward and reused by every later token; each step's logits match the float64 reference session.
    [Fact]
    public void CachedGenerationMatchesTheReference()
    {
        var (c, w) = TinyModels.Random(23);
        var cfg = Config(6, 1);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 2);
        var host = Randomize(p);
        HookReference(reference, model, c, cfg, host);
        using var runtime = (LlamaAdapterRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 8);
        using var runner = new LlamaRunner(model, 1, 8, kvCache: true) { Adapter = runtime };
        int[] tokens = [1, 14, 3, 29, 8, 8, 20];
        var session = reference.NewSession();
        var expected = tokens.Select(t => session.Step(t)).ToArray();
        void Check(int start, int count)
        {
            runner.Ids.RowsView(0, count).Upload<int>(tokens.AsSpan(start, count).ToArray());
            runner.Embed(count);
            runner.Layers(1, count, start);
            runner.FinalNorm(count);
            var logits = runner.LogitsOf(0, count).ToArray<float>();
            for (int r = 0; r < count; r++)
                TestData.Close(expected[start + r], logits.AsSpan(r * c.VocabSize, c.VocabSize), 1e-4, 1e-4, $"logits at position {start + r}");
        }
        Check(0, 4);
        for (int t = 4; t < tokens.Length; t++) Check(t, 1);
    }
}
