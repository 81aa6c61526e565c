// DoRA on a quantized base: the GPU gradients of every element of A, B and the magnitudes m against float64 central
// differences of the reference forward with DoRA hooked in (NF4+DQ and INT4 bases, checkpointing on and off); the
// device's cheap row norm against the materialized ‖W0 + s·B·A‖; and a fresh adapter (B = 0, m = row norms) leaving the
// base model's outputs unchanged.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Dora;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.Dora;

[Collection("gpu")]
public sealed class DoraGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    internal static AdapterConfig Config(string targets, BaseQuant bq, int rank = 2, float alpha = 3) => new()
    {
        Method = PeftMethods.Get("dora"), Settings = new LoraSettings { Rank = rank, Alpha = alpha }, Targets = AdapterConfig.ParseTargets(targets), BaseQuant = bq,
    };

    /// <summary>The dequantized base weight [out, in] of (layer, target) in float64, as the device decodes it.</summary>
    private static double[] BaseWeight(DeviceLlama model, int l, TargetModule t) =>
        LayerReference.ToDouble(model.Layers[l].Linear(t).DownloadDequantized());

    /// <summary>
    /// The reference forward's DoRA hook: y ← (m/n) ⊙ (y + s·B·A·x) with A, B, m read live from <paramref name="host"/> and
    /// n the row norms <paramref name="norms"/> taken once — held constant, as PEFT detaches the norm — so central
    /// differences give exactly the gradients PEFT's autograd (and the device) computes.
    /// </summary>
    internal static void HookDora(ReferenceForward reference, AdapterConfig cfg, Dictionary<string, double[]> host, Dictionary<(int, TargetModule), double[]> norms)
    {
        double s = cfg.SettingsOf<LoraSettings>().Scaling;
        int r = cfg.SettingsOf<LoraSettings>().Rank;
        reference.AfterLinear = (l, kind, x, y) =>
        {
            var t = kind.ToTarget()!.Value;
            if (!cfg.Targets.Contains(t)) return;
            var a = host[AdapterWeights.LoraA(l, t)];
            var b = host[AdapterWeights.LoraB(l, t)];
            var m = host[DoraMethod.MagnitudeName(l, t)];
            var n = norms[(l, t)];
            var ax = new double[r];
            for (int k = 0; k < r; k++)
                for (int i = 0; i < x.Length; i++) ax[k] += a[k * x.Length + i] * x[i];
            for (int o = 0; o < y.Length; o++)
            {
                double branch = 0;
                for (int k = 0; k < r; k++) branch += b[o * r + k] * ax[k];
                y[o] = m[o] / n[o] * (y[o] + s * branch);
            }
        };
    }

    /// <summary>‖W0 + s·B·A‖ per row of every target, materialized in float64 from the host values.</summary>
    internal static Dictionary<(int, TargetModule), double[]> MaterializedNorms(DeviceLlama model, LlamaConfig c, AdapterConfig cfg, Dictionary<string, double[]> host)
    {
        var norms = new Dictionary<(int, TargetModule), double[]>();
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in cfg.Targets)
            {
                var (outF, inF) = c.LinearShape(t);
                norms[(l, t)] = DoraReference.MaterializedRowNorms(BaseWeight(model, l, t), host[AdapterWeights.LoraB(l, t)],
                    host[AdapterWeights.LoraA(l, t)], cfg.SettingsOf<LoraSettings>().Scaling, outF, inF, cfg.SettingsOf<LoraSettings>().Rank);
            }
        return norms;
    }

    // Every linear on NF4+DQ (q/k rows in the base's interleaved RoPE layout) without checkpointing, a subset with it, and
    // a subset on INT4 groups with it.
    [Theory]
    [InlineData("all", "nf4-dq", false)]
    [InlineData("k,o,gate", "nf4-dq", true)]
    [InlineData("q,v,down", "int4", true)]
    public void GradientsOfAbAndMagnitudesMatchFloat64FiniteDifferences(string targets, string quant, bool checkpointing)
    {
        var (c, w) = TinyModels.Random(13);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = Config(targets, bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = TinyModels.DequantizedReference(model, c, w);

        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3, model);
        // Away from the fresh state: B nonzero (so the norm differs from the base's) and m spread around the row norms.
        var host = new Dictionary<string, double[]>();
        int seed = 200;
        foreach (var (name, t) in p.ByName.Where(kv => !kv.Key.EndsWith("lora_magnitude", StringComparison.Ordinal)))
        {
            var v = name.EndsWith("lora_b", StringComparison.Ordinal) ? TestData.Normal((int)t.Param.Count, seed++, 0.3f) : t.Param.ToArray<float>();
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        var norms = MaterializedNorms(model, c, cfg, host);
        foreach (var (name, t) in p.ByName.Where(kv => kv.Key.EndsWith("lora_magnitude", StringComparison.Ordinal)))
        {
            var start = t.Param.ToArray<float>();
            var noise = TestData.Normal(start.Length, seed++, 0.3f);
            var v = start.Select((x, i) => x * (1 + noise[i])).ToArray();
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        // With checkpointing, the backward's recomputation of the pre-scale output runs in chunks of 4 rows (4 + 4 + 2).
        using var runtime = checkpointing ? new DoraRuntime(Ctx, c, cfg, p, maxRows: 2 * 5, chunkRows: 4)
            : (DoraRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / n, seed: 1);

        HookDora(reference, cfg, host, norms);
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        double refLoss = Loss();
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");

        Assert.Equal(cfg.Method.Parameters(c, cfg).Select(s => s.Name).Order(), p.ByName.Keys.Order());
        foreach (var (name, t) in p.ByName) FiniteDifference.AssertGradient(name, t.Grad!, host[name], Loss);
    }

    // The device's rank-sized norm (‖W0_j‖² decoded once, then A·W0ᵀ and B·A·Aᵀ) against the norm of the materialized
    // W0 + s·B·A in float64: fp32 terms of a sum of in + 1 squares, relative error a few u·in; 1e-5 relative holds it.
    [Theory]
    [InlineData("nf4-dq")]
    [InlineData("int4")]
    [InlineData("none")]
    public void CheapRowNormEqualsTheMaterializedNorm(string quant)
    {
        var (c, w) = TinyModels.Random(21, dim: 40, hidden: 72);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = Config("all", bq, rank: 3);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 5, model);
        var host = new Dictionary<string, double[]>();
        int seed = 300;
        foreach (var (name, t) in p.ByName)
        {
            var v = name.EndsWith("lora_b", StringComparison.Ordinal) ? TestData.Normal((int)t.Param.Count, seed++, 0.5f) : t.Param.ToArray<float>();
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        var norms = MaterializedNorms(model, c, cfg, host);
        using var runtime = (DoraRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 4);
        runtime.AttachBase(model);
        foreach (var ((l, t), expected) in norms)
        {
            var (inv, scale) = runtime.NormsOf(l, t);
            var m = host[DoraMethod.MagnitudeName(l, t)];
            for (int j = 0; j < expected.Length; j++)
            {
                Assert.True(Math.Abs(1 / inv[j] - expected[j]) <= 1e-5 * expected[j], $"{l}.{t} row {j}: cheap norm {1 / inv[j]} vs materialized {expected[j]}");
                Assert.True(Math.Abs(scale[j] - m[j] / expected[j]) <= 1e-5 * Math.Abs(m[j] / expected[j]), $"{l}.{t} row {j}: m/n");
            }
        }
    }

    // B = 0 and m = the base's row norms: n = m exactly (the same kernel computes both), so m/n is exactly 1 and every
    // output is the base's bit for bit.
    [Theory]
    [InlineData("nf4-dq")]
    [InlineData("int4")]
    public void FreshAdapterLeavesTheBaseExactlyUnchanged(string quant)
    {
        var (c, w) = TinyModels.Random(5);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = Config("all", bq, rank: 4);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1, model);
        foreach (var (name, t) in p.ByName.Where(kv => kv.Key.EndsWith("lora_magnitude", StringComparison.Ordinal)))
        {
            var (l, target) = (int.Parse(name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture), Enum.Parse<TargetModule>(name.Split('.')[2], ignoreCase: true));
            var expected = DoraReference.RowSquaredNorms(BaseWeight(model, l, target), c.LinearShape(target).Out, c.LinearShape(target).In).Select(Math.Sqrt).ToArray();
            var got = t.Param.ToArray<float>();
            for (int j = 0; j < got.Length; j++) Assert.True(Math.Abs(got[j] - expected[j]) <= 1e-6 * expected[j], $"{name}[{j}] {got[j]} vs row norm {expected[j]}");
        }
        using var runtime = (DoraRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 7);
        Evaluator.Window[] windows = [new([1, 5, 9, 2, 30, 7, 4], [5, 9, 2, 30, 7, 4, 8]), new([7, 3, 36, 0, 11, 2, 2], [3, 36, 0, 11, 2, 2, 6])];
        double baseNll, adapterNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false)) baseNll = Evaluator.Evaluate(runner, windows).MeanNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false) { Adapter = runtime }) adapterNll = Evaluator.Evaluate(runner, windows).MeanNll;
        Assert.Equal(baseNll, adapterNll);
        Assert.All(runtime.NormsOf(0, TargetModule.Q).Scale, v => Assert.Equal(1f, v));
    }
}
