// LoftQ initialization end to end on stories260K: the LoftQ backbone plus its adapter starts training closer to the
// full-precision model than the plain QLoRA start (NF4+DQ base, B = 0), both in weights and in held-out loss; the
// backbone written to the output folder quantizes to the trained base; bad requests are refused naming the option.
using System.Globalization;
using VkPeft.Cli;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;
using Xunit.Abstractions;

namespace VkPeft.Tests.Training.LoftQ;

[Collection("gpu")]
public sealed class LoftQTrainingTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-loftq-").FullName;
    private VulkanContext Ctx => gpu.Context;
    private static LoadedModel Stories => DeviceModelTests.Stories.Value;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private TrainOptions Options(string name, BaseQuant quant, int alpha = 16) => new()
    {
        Data = TrainerTests.WriteData(_dir, 24, 1),
        EvalData = TrainerTests.WriteData(_dir, 8, 2),
        Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = alpha }, BaseQuant = quant },
        Quant = quant,
        Steps = 1,
        Batch = 8,
        SeqLen = 64,
        Lr = 1e-9f,
        Out = Path.Combine(_dir, name),
        Seed = 5,
    };

    /// <summary>The held-out loss before the first step of a run started from <paramref name="host"/>.</summary>
    private double StartLoss(LoadedModel host, TrainOptions o)
    {
        var data = TrainingData.Load(Stories.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);
        using var model = DeviceLlama.Load(Ctx, host.Config, host.Weights, o.Quant);
        using var trainer = new Trainer(Ctx, model, o, data, host);
        return trainer.Evaluate()!.Value;
    }

    [Theory]
    [Trait("Category", "Slow")]   // three model loads and LoftQ on every linear: ./vkpeft test --fast leaves it out
    [InlineData(16)]   // s = 2: the scaling is divided out of the factors
    [InlineData(8)]    // s = 1: PEFT's own case
    public void LoftQStartsCloserToTheFullPrecisionModelThanQlora(int alpha)
    {
        var nf4 = BaseQuant.Parse("nf4-dq");
        double fp32 = StartLoss(Stories, Options("fp32", BaseQuant.None, alpha));
        double qlora = StartLoss(Stories, Options("qlora", nf4, alpha));
        var o = Options("loftq", nf4, alpha) with { LoftQIterations = 5 };
        var start = LoftQInit.Apply(Stories, o.Adapter, nf4, 5, o.Seed);
        double loftq = StartLoss(start.Backbone, o with { InitialAdapter = start.Adapter });
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"alpha {alpha}: held-out loss fp32 {fp32:F5}, QLoRA start {qlora:F5}, LoftQ start {loftq:F5}; ‖W − (Q + s·B·A)‖ {start.TotalBefore:G4} → {start.TotalAfter:G4}"));
        foreach (var line in start.LogLines()) output.WriteLine(line);
        Assert.True(start.TotalAfter < 0.9 * start.TotalBefore, $"weight error {start.TotalBefore} → {start.TotalAfter}");
        Assert.All(start.Errors, e => Assert.True(e.After < e.Before, $"layer {e.Layer} {e.Kind}: {e.Before} → {e.After}"));
        Assert.True(Math.Abs(loftq - fp32) < Math.Abs(qlora - fp32), $"fp32 {fp32}, QLoRA {qlora}, LoftQ {loftq}");
        Assert.True(loftq < qlora, $"LoftQ start {loftq} is not below the QLoRA start {qlora}");

        // The backbone folder quantizes (q/k rows back in the run's layout) to the base LoftQ's adapter corrects.
        var path = LoftQInit.WriteBackbone(start, o.Out);
        var written = ModelLoader.Load(path);
        var (_, weights) = ModelTensors.ToLayout(written.Config, written.Weights, Stories.Config.RopeLayout);
        using var a = DeviceLlama.Load(Ctx, Stories.Config, weights, nf4);
        using var b = DeviceLlama.Load(Ctx, Stories.Config, start.Backbone.Weights, nf4);
        for (int l = 0; l < Stories.Config.NLayers; l++)
            foreach (var t in o.Adapter.Targets)
                Assert.Equal(b.Layers[l].Linear(t).DownloadDequantized(), a.Layers[l].Linear(t).DownloadDequantized());
    }

    [Fact]
    public void BadLoftQRequestsAreRefused()
    {
        var o = Options("bad", BaseQuant.Parse("nf4-dq"));
        Assert.Contains("--loftq-iters must be ≥ 1", CliApp.UserError(Assert.Throws<SettingException>(() => (o with { LoftQIterations = 0 }).Validate())));
        var fp32 = Options("bad", BaseQuant.None) with { LoftQIterations = 2 };
        Assert.Contains("not none", Assert.Throws<SettingException>(() => fp32.Validate()).Message);
        var ia3 = o with { LoftQIterations = 1, Adapter = o.Adapter with { Method = PeftMethods.Get("ia3"), Targets = Peft.Methods.Ia3.Ia3Method.DefaultTargets } };
        Assert.Contains("needs --method lora", CliApp.UserError(Assert.Throws<SettingException>(() => ia3.Validate())));
    }
}
