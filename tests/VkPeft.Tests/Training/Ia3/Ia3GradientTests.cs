// (IA)³ on a quantized base: the GPU gradient of every element of every vector (output-scaled and input-scaled targets)
// against float64 central differences of the reference forward with the scaling hooked in, with checkpointing on and
// off; and the invariant that vectors of ones leave the base model's outputs exactly unchanged.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.Ia3;

[Collection("gpu")]
public sealed class Ia3GradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(string targets, string feedforward, BaseQuant bq) => new()
    {
        Method = PeftMethods.Get("ia3"), Targets = AdapterConfig.ParseTargets(targets),
        Settings = new Ia3Settings(AdapterConfig.ParseTargets(feedforward)), BaseQuant = bq,
    };

    // PEFT's Llama defaults (k, v output; down input) and every linear (q and o too, q/k rows in the base's RoPE layout;
    // gate and up output-scaled), on NF4 with double quantization and on INT4 groups.
    [Theory]
    [InlineData("k,v,down", "down", "nf4-dq", false)]
    [InlineData("k,v,down", "down", "nf4-dq", true)]
    [InlineData("all", "down", "int4", true)]
    public void VectorGradientsMatchFloat64FiniteDifferences(string targets, string feedforward, string quant, bool checkpointing)
    {
        var (c, w) = TinyModels.Random(11);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = Config(targets, feedforward, bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = TinyModels.DequantizedReference(model, c, w);

        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        // Ones in training; spread them so that every element's gradient differs and some scale down.
        var host = new Dictionary<string, double[]>();
        int seed = 100;
        foreach (var (name, t) in p.ByName)
        {
            var v = TestData.Normal((int)t.Param.Count, seed++, 0.3f).Select(x => 1 + x).ToArray();
            t.Param.Upload<float>(v);
            host[name] = [.. v.Select(x => (double)x)];
        }
        using var runtime = (Ia3Runtime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / n, seed: 1);

        reference.BeforeLinear = (l, kind, x) =>
        {
            var t = kind.ToTarget()!.Value;
            if (!cfg.Targets.Contains(t) || !Ia3Method.ScalesInput(cfg, t)) return x;
            var v = host[Ia3Method.VectorName(l, t)];
            return [.. x.Select((xi, i) => xi * v[i])];
        };
        reference.AfterLinear = (l, kind, x, y) =>
        {
            var t = kind.ToTarget()!.Value;
            if (!cfg.Targets.Contains(t) || Ia3Method.ScalesInput(cfg, t)) return;
            var v = host[Ia3Method.VectorName(l, t)];
            for (int o = 0; o < y.Length; o++) y[o] *= v[o];
        };
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        double refLoss = Loss();
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");

        Assert.Equal(cfg.Method.Parameters(c, cfg).Select(s => s.Name).Order(), p.ByName.Keys.Order());
        foreach (var (name, t) in p.ByName)
        {
            FiniteDifference.AssertGradient(name, t.Grad!, host[name], Loss);
        }
    }

    // x·1 is exact in floating point, so a fresh adapter's logits equal the base's bit for bit.
    [Fact]
    public void VectorsOfOnesLeaveTheBaseExactlyUnchanged()
    {
        var (c, w) = TinyModels.Random(5);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = Config("all", "down,gate", bq);
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        Assert.All(p.ByName.Values, t => Assert.All(t.Param.ToArray<float>(), x => Assert.Equal(1f, x)));
        using var runtime = (Ia3Runtime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 7);
        Evaluator.Window[] windows = [new([1, 5, 9, 2, 30, 7, 4], [5, 9, 2, 30, 7, 4, 8]), new([7, 3, 36, 0, 11, 2, 2], [3, 36, 0, 11, 2, 2, 6])];
        double baseNll, adapterNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false)) baseNll = Evaluator.Evaluate(runner, windows).MeanNll;
        using (var runner = new LlamaRunner(model, 2, 7, kvCache: false) { Adapter = runtime }) adapterNll = Evaluator.Evaluate(runner, windows).MeanNll;
        Assert.Equal(baseNll, adapterNll);
    }
}
