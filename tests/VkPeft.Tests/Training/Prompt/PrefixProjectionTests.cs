// Prefix tuning through PEFT's reparameterization (--prefix-projection) on the device: float64 central differences of
// the loss against every MLP tensor and the virtual-token embedding (grouped-query tiny model, NF4+DQ base, checkpointing
// on and off), greedy generation against the reference, the prefix a PEFT folder holds equal to the device MLP's
// output, and the option errors.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prefix;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.Prompt;

[Collection("gpu")]
public sealed class PrefixProjectionTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(int n, int? hidden) => new()
    {
        Method = PeftMethods.Get("prefix"), Targets = [], BaseQuant = BaseQuant.Parse("nf4-dq"), Settings = new PrefixSettings(n, true, hidden),
    };

    /// <summary>The MLP in float64, written out independently of the library: layer ℓ's keys (kv = 0) or values (kv = 1) [n][t].</summary>
    private static double[][] ReferencePrefix(Dictionary<string, double[]> p, LlamaConfig c, int n, int hidden, int layer, int kv)
    {
        int t = c.KvDim, block = 2 * layer + kv;
        var e = p[PrefixMethod.EmbeddingName];
        var w1 = p[PrefixMethod.HiddenWeightName];
        var b1 = p[PrefixMethod.HiddenBiasName];
        var w2 = p[PrefixMethod.OutputWeightName];
        var b2 = p[PrefixMethod.OutputBiasName];
        var rows = new double[n][];
        for (int r = 0; r < n; r++)
        {
            var h = new double[hidden];
            for (int j = 0; j < hidden; j++)
            {
                double z = b1[j];
                for (int i = 0; i < t; i++) z += e[r * t + i] * w1[j * t + i];
                h[j] = Math.Tanh(z);
            }
            rows[r] = new double[t];
            for (int o = 0; o < t; o++)
            {
                double y = b2[block * t + o];
                for (int j = 0; j < hidden; j++) y += h[j] * w2[(block * t + o) * hidden + j];
                rows[r][o] = y;
            }
        }
        return rows;
    }

    // hidden 5 and n 3: no size a multiple of any tile; weights N(0, 0.5²) keep tanh off its flat tails so every element
    // of W1, b1 and E gets a gradient far above the finite-difference noise.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ProjectionGradientsMatchFloat64FiniteDifferences(bool checkpointing)
    {
        var (c, w) = TinyModels.Random(23);
        const int n = 3, hidden = 5;
        var cfg = Config(n, hidden);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        Assert.Equal(5, p.ByName.Count);
        var host = new Dictionary<string, double[]>();
        int seed = 60;
        foreach (var (name, t) in p.ByName)
        {
            var v = TestData.Normal((int)t.Param.Count, seed++, 0.5f);
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int count = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / count, seed: 1);

        reference.AttentionPrefix = l => (ReferencePrefix(host, c, n, hidden, l, 0), ReferencePrefix(host, c, n, hidden, l, 1), null);
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        // fp32 device forward (the MLP included) against float64: 1e-4 on a loss of order 1, as for the plain prefix.
        Assert.True(Math.Abs(gpuLoss / count - Loss()) < 1e-4, $"loss {gpuLoss / count} vs reference {Loss()}");
        foreach (var (name, t) in p.ByName) FiniteDifference.AssertGradient(name, t.Grad!, host[name], Loss);
    }

    // Generation: the MLP runs once, at the prompt's prefill, and its prefix stays in the KV cache for later tokens.
    // Greedy continuation on an fp32 base against the float64 reference fed the float64 MLP's prefix.
    [Fact]
    public void GenerationComputesThePrefixOnceAndMatchesTheReference()
    {
        var (c, w) = TinyModels.Random(31);
        const int n = 4, hidden = 6;
        var cfg = Config(n, hidden) with { BaseQuant = BaseQuant.None };
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 5);
        var host = p.ByName.ToDictionary(kv => kv.Key, kv => kv.Value.Param.ToArray<float>().Select(x => (double)x).ToArray());
        var reference = new ReferenceForward(c, w)
        {
            AttentionPrefix = l => (ReferencePrefix(host, c, n, hidden, l, 0), ReferencePrefix(host, c, n, hidden, l, 1), null),
        };
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 20);
        using var runner = new LlamaRunner(model, 1, 20, kvCache: true, adapter: runtime);
        var generated = new Generator(runner).Generate([1, 5, 9], 12, new SamplingOptions());
        Assert.Equal(reference.GenerateGreedy([1, 5, 9], 12), generated);
    }

    // The PEFT folder holds the computed prefix: its keys and values (back in the model's RoPE layout) equal the device
    // MLP's output to fp32 matmul rounding (the host computes in float64 and rounds once; entries of order 1, sums of 16
    // and 5 products: 1e-5 absolute). The saved config says prefix_projection true with the hidden width.
    [Fact]
    public void SavedPeftPrefixIsTheMlpOutput()
    {
        var (c, w) = TinyModels.Random(29);
        const int n = 4;
        var cfg = Config(n, 7);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 9);
        using var runtime = (PrefixRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 8);
        var device = Enumerable.Range(0, c.NLayers).Select(l => runtime.Prefix(l)).Select(kv => (K: kv.Keys.ToArray<float>(), V: kv.Values.ToArray<float>())).ToArray();

        string dir = Path.Combine(Path.GetTempPath(), $"vkpeft-prefixproj-{Guid.NewGuid():N}");
        try
        {
            AdapterIO.SavePeft(dir, p.ToHost(cfg), c, force: false);
            var json = File.ReadAllText(Path.Combine(dir, "adapter_config.json"));
            Assert.Contains("\"prefix_projection\": true", json);
            Assert.Contains("\"encoder_hidden_size\": 7", json);
            var loaded = AdapterIO.Load(dir, c);
            Assert.False(PrefixMethod.Settings(loaded.Config).Projection);
            for (int l = 0; l < c.NLayers; l++)
            {
                TestData.Close(device[l].K, loaded.Tensors[PrefixMethod.KeysName(l)].Data, 1e-5, 0, $"layer {l} keys");
                TestData.Close(device[l].V, loaded.Tensors[PrefixMethod.ValuesName(l)].Data, 1e-5, 0, $"layer {l} values");
            }
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData(true, 0, "--prefix-hidden must be ≥ 1, got 0")]
    [InlineData(false, 8, "--prefix-hidden sets the projection MLP's width: it needs --prefix-projection")]
    public void BadOptionsAreOneLineErrors(bool projection, int hidden, string message)
    {
        var cfg = Config(4, hidden) with { Settings = new PrefixSettings(4, projection, hidden) };
        var e = Assert.Throws<FormatException>(() => cfg.Method.ValidateOptions(cfg, cfg.BaseQuant));
        Assert.Equal(message, e.Message);
    }

    // An adapter file's fields: a hidden width of 0, or one without the projection, named with the file and field.
    [Theory]
    [InlineData(true, 0, "adapter.json: encoder_hidden_size: must be ≥ 1, got 0")]
    [InlineData(false, 8, "adapter.json: encoder_hidden_size: is set but prefix_projection is false")]
    public void BadAdapterFieldsNameTheFileAndField(bool projection, int hidden, string message)
    {
        var (c, _) = TinyModels.Random(3);
        var cfg = Config(4, hidden) with { Settings = new PrefixSettings(4, projection, hidden) };
        var e = Assert.Throws<VkPeft.Peft.Formats.ModelFormatException>(() => cfg.Method.ValidateConfig(cfg, c, "adapter.json"));
        Assert.Equal(message, e.Message);
    }
}
