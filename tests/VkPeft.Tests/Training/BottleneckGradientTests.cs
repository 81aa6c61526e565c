// End-to-end finite-difference gradient checks of bottleneck adapters (Houlsby and parallel, ReLU/SiLU/GELU) through a
// whole tiny model with an NF4+DQ base, and the exact identity of a freshly initialized adapter.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Bottleneck;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
public sealed class BottleneckGradientTests(GpuFixture gpu, ITestOutputHelper output)
{
    private VulkanContext Ctx => gpu.Context;

    /// <summary>The activations as the device computes them (GELU: the tanh approximation), in float64.</summary>
    internal static double Act(BottleneckActivation a, double x) => a switch
    {
        BottleneckActivation.Relu => Math.Max(x, 0),
        BottleneckActivation.Silu => x / (1 + Math.Exp(-x)),
        _ => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
    };

    /// <summary>The base model as the device holds it (quantized linears dequantized), for the float64 reference.</summary>
    internal static ReferenceForward Reference(DeviceLlama model, LlamaConfig c, LlamaWeights w)
    {
        var deq = model.Layers.Select(l => new Dictionary<LlamaTensorKind, float[]>
        {
            [LlamaTensorKind.Wq] = l.Wq.DownloadDequantized(), [LlamaTensorKind.Wk] = l.Wk.DownloadDequantized(),
            [LlamaTensorKind.Wv] = l.Wv.DownloadDequantized(), [LlamaTensorKind.Wo] = l.Wo.DownloadDequantized(),
            [LlamaTensorKind.WGate] = l.Gate.DownloadDequantized(), [LlamaTensorKind.WUp] = l.Up.DownloadDequantized(),
            [LlamaTensorKind.WDown] = l.Down.DownloadDequantized(),
        }).ToArray();
        return new ReferenceForward(c, TinyModels.WithLinears(w, (l, k) => deq[l][k]));
    }

    [Theory]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Silu, false)]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Silu, true)]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Gelu, false)]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Gelu, true)]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Relu, false)]
    [InlineData(BottleneckKind.Houlsby, BottleneckActivation.Relu, true)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Silu, false)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Silu, true)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Gelu, false)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Gelu, true)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Relu, false)]
    [InlineData(BottleneckKind.Parallel, BottleneckActivation.Relu, true)]
    public void GradientsMatchFloat64FiniteDifferences(BottleneckKind kind, BottleneckActivation act, bool checkpointing)
    {
        var (c, w) = TinyModels.Random(11);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = new AdapterConfig
        {
            Method = PeftMethod.Adapter, Settings = new BottleneckSettings { Kind = kind, Bottleneck = 3, Activation = act, Scale = 4f }, BaseQuant = bq,
        };
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = Reference(model, c, w);

        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        Assert.Equal(c.NLayers * (kind == BottleneckKind.Houlsby ? 2 : 1) * 4, p.ByName.Count);
        // up and the biases start at zero in training; give them values so that every gradient is non-trivial.
        var host = new Dictionary<string, double[]>();
        // (For ReLU, values whose pre-activations all keep clear of the kink; see the check below.)
        int s = act == BottleneckActivation.Relu ? 300 : 100;
        foreach (var (name, t) in p.ByName)
        {
            var v = name.EndsWith(".down", StringComparison.Ordinal) ? t.Param.ToArray<float>() : TestData.Normal((int)t.Param.Count, s++, 0.3f);
            t.Param.Upload<float>(v);
            host[name] = v.Select(x => (double)x).ToArray();
        }
        using var adapter = (BottleneckRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, adapter, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] targets = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = targets.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, targets, 1f / n, seed: 1);

        // Reference: z ← z + s·(W_up·f(W_down·x + b_down) + b_up), x = z (Houlsby) or the MLP input h (parallel).
        int b = cfg.SettingsOf<BottleneckSettings>().Bottleneck, dim = c.Dim;
        double scale = kind == BottleneckKind.Parallel ? cfg.SettingsOf<BottleneckSettings>().Scale : 1;
        double minAbsPre = double.PositiveInfinity, maxAbsIn = 0;
        void Site(int l, string site, double[] x, double[] z)
        {
            var down = host[AdapterWeights.Bottleneck(l, site, "down")];
            var downBias = host[AdapterWeights.Bottleneck(l, site, "down_bias")];
            var up = host[AdapterWeights.Bottleneck(l, site, "up")];
            var upBias = host[AdapterWeights.Bottleneck(l, site, "up_bias")];
            var f = new double[b];
            foreach (var xi in x) maxAbsIn = Math.Max(maxAbsIn, Math.Abs(xi));
            for (int j = 0; j < b; j++)
            {
                double a = downBias[j];
                for (int i = 0; i < dim; i++) a += down[j * dim + i] * x[i];
                minAbsPre = Math.Min(minAbsPre, Math.Abs(a));
                f[j] = Act(act, a);
            }
            for (int o = 0; o < dim; o++)
            {
                double y = upBias[o];
                for (int j = 0; j < b; j++) y += up[o * b + j] * f[j];
                z[o] += scale * y;
            }
        }
        if (kind == BottleneckKind.Houlsby)
        {
            reference.AfterAttentionOutput = (l, z) => Site(l, "attn", z, z);
            reference.AfterMlpOutput = (l, _, z) => Site(l, "mlp", z, z);
        }
        else
        {
            reference.AfterMlpOutput = (l, h, z) => Site(l, "mlp", h, z);
        }
        double Loss() => TinyModels.ReferenceLoss(reference, ids, targets, seqLen: 5);
        double refLoss = Loss();
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");
        // ReLU is checked by finite differences only away from its kink: a parameter step of h moves a pre-activation by
        // about h·|x|, so every pre-activation must lie well beyond that from 0 (else the check would cross the kink).
        const double fdStep = 1e-5;
        if (act == BottleneckActivation.Relu)
            Assert.True(minAbsPre > 20 * fdStep * Math.Max(1, maxAbsIn), $"a pre-activation ({minAbsPre:G3}) lies too close to ReLU's kink for finite differences (|x| ≤ {maxAbsIn:G3})");

        double worst = 0, worstRel = 0;
        foreach (var (name, t) in p.ByName)
        {
            var g = t.Grad!.ToArray<float>();
            var v = host[name];
            for (int i = 0; i < v.Length; i++)
            {
                double keep = v[i];
                v[i] = keep + fdStep; double upLoss = Loss();
                v[i] = keep - fdStep; double downLoss = Loss();
                v[i] = keep;
                double fd = (upLoss - downLoss) / (2 * fdStep);
                // fp32 forward/backward of a loss of order 1: absolute error ~1e-6 plus 1e-3 relative (accumulated rounding).
                double err = Math.Abs(g[i] - fd);
                Assert.True(err <= 2e-5 + 2e-3 * Math.Abs(fd), $"{name}[{i}]: gpu {g[i]:G6} vs finite difference {fd:G6}");
                worst = Math.Max(worst, err);
                if (Math.Abs(fd) > 1e-3) worstRel = Math.Max(worstRel, err / Math.Abs(fd));
            }
            // Every tensor of every site must receive gradient (the hooks of all layers and sites ran backward).
            Assert.True(g.Any(x => x != 0), $"{name}: zero gradient");
        }
        output.WriteLine($"{kind} {act} checkpointing={checkpointing}: {p.Count} parameters, max |gpu − fd| = {worst:G3}, max relative (|fd| > 1e-3) = {worstRel:G3}, min |pre-activation| = {minAbsPre:G3}");
    }

    [Theory]
    [InlineData(BottleneckKind.Houlsby, false)]
    [InlineData(BottleneckKind.Houlsby, true)]
    [InlineData(BottleneckKind.Parallel, false)]
    [InlineData(BottleneckKind.Parallel, true)]
    public void FreshAdapterLeavesLogitsExactlyUnchanged(BottleneckKind kind, bool training)
    {
        var (c, w) = TinyModels.Random(5);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = new AdapterConfig { Method = PeftMethod.Adapter, Settings = new BottleneckSettings { Kind = kind, Bottleneck = 5 }, BaseQuant = bq };
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 9);
        foreach (var (name, t) in p.ByName)
        {
            var v = t.Param.ToArray<float>();
            if (name.EndsWith(".down", StringComparison.Ordinal))
            {
                float bound = 1f / MathF.Sqrt(c.Dim);
                Assert.All(v, x => Assert.InRange(x, -bound, bound));
                Assert.Contains(v, x => x != 0);
            }
            else Assert.All(v, x => Assert.Equal(0f, x));
        }
        using var adapter = (BottleneckRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 6);
        adapter.Training = training;
        using var runner = new LlamaRunner(model, 2, 6, kvCache: false);
        runner.Ids.Upload<int>([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]);
        float[] Logits()
        {
            runner.Embed(12);
            runner.Layers(2, 6);
            runner.FinalNorm(12);
            return runner.LogitsOf(0, 12).ToArray<float>();
        }
        var baseLogits = Logits();
        runner.Adapter = adapter;
        var adapted = Logits();
        Assert.Equal(baseLogits, adapted);
    }

    [Fact]
    public void ReluAdapterIsExactlyRectified()
    {
        // With W_up = identity-like and down = e_k rows, a ReLU adapter adds exactly max(z_k + b_k, 0) to output k: a
        // check of the forward's ReLU at and around the kink (where finite differences cannot look).
        var (c, w) = TinyModels.Random(7);
        var cfg = new AdapterConfig
        {
            Method = PeftMethod.Adapter, BaseQuant = BaseQuant.None,
            Settings = new BottleneckSettings { Kind = BottleneckKind.Parallel, Bottleneck = 4, Activation = BottleneckActivation.Relu, Scale = 2f },
        };
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        int b = cfg.SettingsOf<BottleneckSettings>().Bottleneck, dim = c.Dim;
        var down = new float[b * dim];
        var up = new float[dim * b];
        for (int k = 0; k < b; k++) { down[k * dim + k] = 1; up[k * b + k] = 1; }
        float[] downBias = [0f, -0.25f, 0.5f, -1e30f];   // the last unit is always off
        foreach (var l in Enumerable.Range(0, c.NLayers))
        {
            p[AdapterWeights.Bottleneck(l, "mlp", "down")].Upload<float>(down);
            p[AdapterWeights.Bottleneck(l, "mlp", "up")].Upload<float>(up);
            p[AdapterWeights.Bottleneck(l, "mlp", "down_bias")].Upload<float>(downBias);
        }
        using var adapter = (BottleneckRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 3);
        using var h = DeviceTensor.Create(Ctx, "h", DType.F32, [3, dim], MemoryCategory.Workspace);
        using var z = DeviceTensor.Create(Ctx, "z", DType.F32, [3, dim], MemoryCategory.Workspace);
        // Rows put h_k exactly on, below and above each unit's kink −b_k.
        var hv = new float[3 * dim];
        for (int r = 0; r < 3; r++) for (int k = 0; k < b; k++) hv[r * dim + k] = -downBias[Math.Min(k, 2)] + (r - 1) * 0.125f;
        var zv = TestData.Normal(3 * dim, 4, 1f);
        h.Upload<float>(hv);
        z.Upload<float>(zv);
        adapter.MlpOutput(1, h, z);
        var got = z.ToArray<float>();
        for (int r = 0; r < 3; r++)
            for (int o = 0; o < dim; o++)
            {
                float expected = zv[r * dim + o];
                if (o < b) expected += cfg.SettingsOf<BottleneckSettings>().Scale * MathF.Max(hv[r * dim + o] + downBias[o], 0f);
                Assert.Equal(expected, got[r * dim + o]);
            }
    }
}
