// Host offloading changes where state lives, never the numbers: training with layer inputs and AdamW moments in host
// memory gives bit-identical parameters, and the offloaded bytes are charged to the host arena, not the device's.
using VkPeft.Cli;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
public sealed class OffloadTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static readonly int[] Ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0, 4, 8, 15, 16, 23, 12, 2, 19];
    private static readonly int[] Targets = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11, 8, 15, 16, 23, 12, 2, 19, 6];

    /// <summary>Three AdamW steps of LoRA (with dropout) on a tiny NF4+DQ model; returns every parameter and the losses.</summary>
    private (Dictionary<string, float[]> Params, double[] Losses, long HostOptimizer, long DeviceOptimizer, long HostActivations)
        Train(bool offload, bool optimizerOnHost, float dropout)
    {
        var (c, w) = TinyModels.Random(21, layers: 3);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 3, Alpha = 6, Dropout = dropout }, BaseQuant = bq };
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var host = Ctx.HostArena.Accounting;
        long hostOptBefore = host.Current(MemoryCategory.Optimizer), hostActBefore = host.Current(MemoryCategory.Activations);
        long devOptBefore = Ctx.Arena.Accounting.Current(MemoryCategory.Optimizer);
        using var p = new TrainableParameters(Ctx, withOptimizer: true, optimizerOnHost ? MemoryPlace.Host : MemoryPlace.Device);
        cfg.Method.Initialize(p, c, cfg, seed: 4);
        using var lora = new LoraRuntime(Ctx, c, cfg, p, maxRows: 18);
        using var step = new TrainStep(model, lora, batch: 2, seqLen: 9, checkpointing: true, logitRows: 5, offloadCheckpoints: offload);
        long hostOpt = host.Current(MemoryCategory.Optimizer) - hostOptBefore, hostAct = host.Current(MemoryCategory.Activations) - hostActBefore;
        long devOpt = Ctx.Arena.Accounting.Current(MemoryCategory.Optimizer) - devOptBefore;
        var losses = new double[3];
        for (int i = 0; i < 3; i++)
        {
            losses[i] = step.Run(Ids, Targets, 1f / 17, seed: (uint)i);
            p.Step(i + 1, new AdamWSettings(Lr: 1e-2), 1f);
            p.ZeroGrads();
        }
        return (p.ByName.ToDictionary(kv => kv.Key, kv => kv.Value.Param.ToArray<float>()), losses, hostOpt, devOpt, hostAct);
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(0.2f)]
    public void OffloadedTrainingIsBitIdentical(float dropout)
    {
        var device = Train(offload: false, optimizerOnHost: false, dropout);
        var offloaded = Train(offload: true, optimizerOnHost: true, dropout);
        Assert.Equal(device.Losses, offloaded.Losses);
        Assert.Equal(device.Params.Keys.Order(), offloaded.Params.Keys.Order());
        foreach (var (name, v) in device.Params) Assert.Equal(v, offloaded.Params[name]);
        // The parameters moved: the comparison is not of two untouched initializations.
        Assert.Contains(device.Params, kv => kv.Key.EndsWith("lora_b", StringComparison.Ordinal) && kv.Value.Any(x => x != 0));

        // Where the state went: moments and 3 layer inputs of [18, 32] floats on the host, nothing of them on the device.
        Assert.Equal(0, device.HostOptimizer);
        Assert.True(device.DeviceOptimizer > 0);
        Assert.Equal(0, offloaded.DeviceOptimizer);
        Assert.Equal(device.DeviceOptimizer, offloaded.HostOptimizer);
        Assert.Equal(3L * 18 * 32 * 4, offloaded.HostActivations);
    }

    [Fact]
    public void EvaluationInTheStepBuffersMatchesTheInferenceRunner()
    {
        var (c, w) = TinyModels.Random(22, layers: 2);
        var bq = BaseQuant.Parse("nf4-dq");
        var cfg = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 2, Alpha = 4 }, BaseQuant = bq };
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 9);
        foreach (var (name, t) in p.ByName)
            if (name.EndsWith("lora_b", StringComparison.Ordinal)) t.Param.Upload<float>(TestData.Normal((int)t.Param.Count, 3, 0.3f));
        using var lora = new LoraRuntime(Ctx, c, cfg, p, maxRows: 18);
        foreach (bool offload in new[] { false, true })
        {
            using var step = new TrainStep(model, lora, batch: 2, seqLen: 9, checkpointing: true, logitRows: 4, offloadCheckpoints: offload);
            double sum = step.Loss(Ids, Targets);
            using var runner = new LlamaRunner(model, 2, 9, kvCache: false) { Adapter = lora };
            var windows = new List<Evaluator.Window> { new(Ids[..9], Targets[..9]), new(Ids[9..], Targets[9..]) };
            var r = Evaluator.Evaluate(runner, windows);
            Assert.Equal(17, r.Tokens);
            Assert.Equal(r.MeanNll, sum / 17, 5);
        }
    }

    [Fact]
    public void OffloadWithoutCheckpointingIsRefused()
    {
        var (c, w) = TinyModels.Random(23, layers: 1);
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        var cfg = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 2, Alpha = 4 }, BaseQuant = BaseQuant.None };
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        using var lora = new LoraRuntime(Ctx, c, cfg, p, maxRows: 4);
        var e = Assert.Throws<SettingException>(() => new TrainStep(model, lora, 1, 4, checkpointing: false, offloadCheckpoints: true));
        Assert.Contains("--checkpointing", CliApp.UserError(e));
    }
}
