// Bias and norm tuning on a quantized base: the GPU gradient of every element of every bias and norm delta against
// float64 central differences of the reference forward with the biases and tuned norm weights hooked in (checkpointing
// on and off, NF4+DQ and INT4 bases); inference with the adapter against the reference; and the invariant that a fresh
// adapter (zero biases, zero norm deltas) leaves the base model exactly unchanged.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.BiasNorm;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.BiasNorm;

[Collection("gpu")]
public sealed class BiasNormGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(string method, string targets, bool norms, BaseQuant bq) => new()
    {
        Method = PeftMethods.Get(method), Targets = targets.Length == 0 ? [] : AdapterConfig.ParseTargets(targets),
        Settings = new BiasNormSettings(norms), BaseQuant = bq,
    };

    /// <summary>Hooks the adapter's host values into the float64 reference: biases after their linears, tuned norm weights.</summary>
    private static void Hook(ReferenceForward reference, AdapterConfig cfg, LlamaWeights w, Dictionary<string, double[]> host)
    {
        reference.AfterLinear = (l, kind, _, y) =>
        {
            var t = kind.ToTarget()!.Value;
            if (!cfg.Targets.Contains(t)) return;
            var b = host[BiasNormMethod.BiasName(l, t)];
            for (int o = 0; o < y.Length; o++) y[o] += b[o];
        };
        if (!((BiasNormMethod)cfg.Method).TrainsNorms(cfg)) return;
        reference.NormWeight = (l, kind) =>
        {
            var baseW = kind switch
            {
                LlamaTensorKind.AttnNorm => w.Layers[l].AttnNorm,
                LlamaTensorKind.FfnNorm => w.Layers[l].FfnNorm,
                _ => w.FinalNorm,
            };
            var d = host[BiasNormMethod.NormName(l, kind)];
            return [.. baseW.Select((x, i) => x + d[i])];
        };
    }

    /// <summary>Random non-zero values in every tensor (so every element's gradient differs), mirrored on the host.</summary>
    private static Dictionary<string, double[]> Randomize(TrainableParameters p, int seed)
    {
        var host = new Dictionary<string, double[]>();
        foreach (var (name, t) in p.ByName)
        {
            var v = TestData.Normal((int)t.Param.Count, seed++, 0.2f);
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        return host;
    }

    // Biases on every linear (q/k rows in the base's RoPE layout) and on some with checkpointing, the norms alone, and
    // both on INT4 groups.
    [Theory]
    [InlineData("bias", "all", false, "nf4-dq", false)]
    [InlineData("bias", "k,o,gate", false, "nf4-dq", true)]
    [InlineData("norm", "", true, "nf4-dq", false)]
    [InlineData("norm", "", true, "nf4-dq", true)]
    [InlineData("bias", "q,v,down", true, "int4", true)]
    public void GradientsMatchFloat64FiniteDifferences(string method, string targets, bool norms, string quant, bool checkpointing)
    {
        var (c, w) = TinyModels.Random(13);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = Config(method, targets, norms, bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = TinyModels.DequantizedReference(model, c, w);

        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        var host = Randomize(p, 200);
        using var runtime = (BiasNormRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / n, seed: 1);

        Hook(reference, cfg, w, host);
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        double refLoss = Loss();
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");

        var expected = cfg.Method.Parameters(c, cfg).Select(s => s.Name).ToList();
        Assert.Equal(expected.Order(), p.ByName.Keys.Order());
        Assert.Equal(norms, expected.Contains(BiasNormMethod.NormName(-1, LlamaTensorKind.FinalNorm)));
        Assert.Equal(targets.Length > 0, expected.Any(x => x.EndsWith(".bias", StringComparison.Ordinal)));
        foreach (var (name, t) in p.ByName) FiniteDifference.AssertGradient(name, t.Grad!, host[name], Loss);
    }

    // The inference path (o and down accumulated straight into the residual stream, then the bias) against the reference.
    [Fact]
    public void InferenceWithTheAdapterMatchesTheReference()
    {
        var (c, w) = TinyModels.Random(17);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = Config("bias", "all", true, bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        var host = Randomize(p, 300);
        Hook(reference, cfg, w, host);
        using var runtime = (BiasNormRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 7);
        int[] ids = [1, 5, 9, 2, 30, 7, 4], targets = [5, 9, 2, 30, 7, 4, 8];
        double nll;
        using (var runner = new LlamaRunner(model, 1, 7, kvCache: false) { Adapter = runtime })
            nll = Evaluator.Evaluate(runner, [new Evaluator.Window(ids, targets)]).MeanNll;
        double refNll = TinyModels.ReferenceLoss(reference, ids, targets, seqLen: 7);
        // fp32 against float64 over 7 tokens of a loss of order 1: 1e-4 as in the gradient checks.
        Assert.True(Math.Abs(nll - refNll) < 1e-4, $"device {nll} vs reference {refNll}");
    }

    // A base with biases on every linear (what a merged bias adapter becomes: Hugging Face attention_bias and mlp_bias),
    // fp32 weights, on the device against the float64 reference.
    [Fact]
    public void ABaseWithBiasesOnEveryLinearMatchesTheReference()
    {
        var (c0, w0) = TinyModels.Random(19);
        var c = c0 with { AttentionBias = true, OutputBias = true, MlpBias = true };
        int seed = 400;
        float[] B(int n) => TestData.Normal(n, seed++, 0.2f);
        var w = new LlamaWeights
        {
            TokenEmbedding = w0.TokenEmbedding, FinalNorm = w0.FinalNorm, Classifier = w0.Classifier,
            Layers = [.. w0.Layers.Select(l => new LlamaLayerWeights
            {
                AttnNorm = l.AttnNorm, FfnNorm = l.FfnNorm, Wq = l.Wq, Wk = l.Wk, Wv = l.Wv, Wo = l.Wo, WGate = l.WGate, WUp = l.WUp, WDown = l.WDown,
                Bq = B(c.QDim), Bk = B(c.KvDim), Bv = B(c.KvDim), Bo = B(c.Dim), BGate = B(c.HiddenDim), BUp = B(c.HiddenDim), BDown = B(c.Dim),
            })],
        };
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        int[] ids = [1, 5, 9, 2, 30, 7, 4], targets = [5, 9, 2, 30, 7, 4, 8];
        double nll;
        using (var runner = new LlamaRunner(model, 1, 7, kvCache: false)) nll = Evaluator.Evaluate(runner, [new Evaluator.Window(ids, targets)]).MeanNll;
        double refNll = TinyModels.ReferenceLoss(new ReferenceForward(c, w), ids, targets, seqLen: 7);
        double noBias = TinyModels.ReferenceLoss(new ReferenceForward(c0, w0), ids, targets, seqLen: 7);
        // fp32 against float64: 1e-4 as in the gradient checks; the biases change the loss by far more than that.
        Assert.True(Math.Abs(nll - refNll) < 1e-4, $"device {nll} vs reference {refNll}");
        Assert.True(Math.Abs(noBias - refNll) > 1e-2, $"biases moved the loss only from {noBias} to {refNll}");
    }

    // y + 0 and w + 0 are exact in floating point, so a fresh adapter's logits equal the base's bit for bit.
    [Fact]
    public void ZeroBiasesAndNormDeltasLeaveTheBaseExactlyUnchanged()
    {
        var (c, w) = TinyModels.Random(5);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = Config("bias", "all", true, bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        Assert.All(p.ByName.Values, t => Assert.All(t.Param.ToArray<float>(), x => Assert.Equal(0f, x)));
        using var runtime = (BiasNormRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 7);
        Evaluator.Window[] windows = [new([1, 5, 9, 2, 30, 7, 4], [5, 9, 2, 30, 7, 4, 8]), new([7, 3, 36, 0, 11, 2, 2], [3, 36, 0, 11, 2, 2, 6])];
        double baseNll, adapterNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false)) baseNll = Evaluator.Evaluate(runner, windows).MeanNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false) { Adapter = runtime }) adapterNll = Evaluator.Evaluate(runner, windows).MeanNll;
        Assert.Equal(baseNll, adapterNll);
    }
}
