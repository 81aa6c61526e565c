// ReLoRA merge-and-restart on the real stories260K: a restart with a zero adapter leaves the model unchanged, resuming
// across a restart is bit-exact (the checkpoint's cycle adapters rebuild the merged base), the jagged schedule and the
// optimizer's magnitude pruning have the reference's values, and the recipe lowers held-out loss and writes the merged
// model and the base the last cycle's adapter pairs with.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Cli;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;
using Xunit.Abstractions;

namespace VkPeft.Tests.Training.Relora;

public sealed class ReloraScheduleTests
{
    private static TrainOptions Options(ReloraOptions relora) => new()
    {
        Data = "unused.txt",
        Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 4, Alpha = 8 }, BaseQuant = BaseQuant.Parse("nf4-dq") },
        Quant = BaseQuant.Parse("nf4-dq"),
        Steps = 20,
        Lr = 1f,
        Warmup = 2,
        Out = "unused",
        Relora = relora,
    };

    [Fact]
    public void JaggedScheduleRewarmsLinearlyAfterEachRestart()
    {
        var o = Options(new ReloraOptions { Every = 5, Warmup = 3 });
        // The plain schedule: warmup 2, then cosine from step 2 to 20.
        double Cosine(int s) => s <= 2 ? s / 2.0 : 0.5 * (1 + Math.Cos(Math.PI * (s - 2) / 18.0));
        // Restarts after steps 5, 10 and 15; the three steps after each ramp 1/3, 2/3, 1 (the factor reaches 1 at step restart+3).
        double[] factor = [1, 1, 1, 1, 1, 1 / 3.0, 2 / 3.0, 1, 1, 1, 1 / 3.0, 2 / 3.0, 1, 1, 1, 1 / 3.0, 2 / 3.0, 1, 1, 1];
        for (int s = 1; s <= 20; s++)
            Assert.Equal(Cosine(s) * factor[s - 1], o.LearningRate(s), 12);   // float64 arithmetic of the same formula
        Assert.Equal(0, new ReloraOptions { Every = 5, Warmup = 3 }.RewarmFactor(5) - 1);
        // Without ReLoRA the schedule is the plain one.
        var plain = o with { Relora = null };
        for (int s = 1; s <= 20; s++) Assert.Equal(Cosine(s), plain.LearningRate(s), 12);
        // The default re-warm is a tenth of the cycle.
        Assert.Equal(10, new ReloraOptions { Every = 100 }.RestartWarmup);
        Assert.Equal(1, new ReloraOptions { Every = 7 }.RestartWarmup);
    }

    [Fact]
    public void MagnitudePruningZeroesTheSmallestShareAsTorchQuantileDoes()
    {
        float[] v = [-1, 2, -3, 4, 5, -6, 7, 8, -9, 10];
        var p = (float[])v.Clone();
        ReloraOptions.MagnitudePrune(p, 0.9);    // quantile at position 8.1: 9 + 0.1·(10 − 9) = 9.1 → only |10| stays
        Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], p);
        p = (float[])v.Clone();
        ReloraOptions.MagnitudePrune(p, 0.5);    // position 4.5: 5.5 → |6| and up stay
        Assert.Equal([0, 0, 0, 0, 0, -6, 7, 8, -9, 10], p);
        p = (float[])v.Clone();
        ReloraOptions.MagnitudePrune(p, 1);      // a reset
        Assert.All(p, x => Assert.Equal(0, x));
        p = (float[])v.Clone();
        ReloraOptions.MagnitudePrune(p, 0);      // kept
        Assert.Equal(v, p);
    }

    [Fact]
    public void BadReloraOptionsAreClearErrors()
    {
        var o = Options(new ReloraOptions { Every = 5 });
        Assert.Contains("--relora-every must be ≥ 1", CliApp.UserError(Assert.Throws<SettingException>(() => (o with { Relora = new ReloraOptions { Every = 0 } }).Validate())));
        Assert.Contains("--relora-prune", CliApp.UserError(Assert.Throws<SettingException>(() => (o with { Relora = new ReloraOptions { Every = 5, PruneRatio = 1.5 } }).Validate())));
        Assert.Contains("longer than a cycle", Assert.Throws<SettingException>(() => (o with { Relora = new ReloraOptions { Every = 5, Warmup = 6 } }).Validate()).Message);
        var ia3 = o with { Adapter = o.Adapter with { Method = PeftMethods.Get("ia3"), Targets = Ia3Method.DefaultTargets } };
        Assert.Contains("needs --method lora", CliApp.UserError(Assert.Throws<SettingException>(() => ia3.Validate())));
        var int4 = o with { Quant = BaseQuant.Parse("int4"), Adapter = o.Adapter with { BaseQuant = BaseQuant.Parse("int4") } };
        Assert.Contains("not int4", Assert.Throws<SettingException>(() => int4.Validate()).Message);
    }
}

[Collection("gpu")]
public sealed class ReloraTrainingTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-relora-").FullName;
    private VulkanContext Ctx => gpu.Context;
    private static LoadedModel Stories => DeviceModelTests.Stories.Value;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private TrainOptions Options(string outDir, int steps, int every, ReloraMergeFrom from = ReloraMergeFrom.Original) => new()
    {
        Data = TrainerTests.WriteData(_dir, 48, 1),
        EvalData = TrainerTests.WriteData(_dir, 8, 2),
        Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = 16 }, BaseQuant = BaseQuant.Parse("nf4-dq") },
        Quant = BaseQuant.Parse("nf4-dq"),
        Steps = steps,
        Batch = 8,
        SeqLen = 64,
        Lr = 2e-3f,
        Warmup = 2,
        Out = outDir,
        Seed = 5,
        Relora = new ReloraOptions { Every = every, Warmup = 2, MergeFrom = from },
    };

    private TrainingData Data(TrainOptions o) => TrainingData.Load(Stories.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);

    private static float[][] TargetWeights(DeviceLlama model, AdapterConfig a) =>
        [.. model.Layers.SelectMany(l => a.Targets.Select(t => l.Linear(t).DownloadDequantized()))];

    [Theory]
    [InlineData(ReloraMergeFrom.Original)]
    [InlineData(ReloraMergeFrom.Dequantized)]
    public void RestartWithAZeroAdapterLeavesTheModelUnchanged(ReloraMergeFrom from)
    {
        // A fresh LoRA adapter has B = 0, so ΔW = 0. From the full-precision copy the same weights quantize to the same
        // codes: the base is unchanged bit for bit. From the dequantized base the decoded weights are quantized again,
        // which double quantization does not reproduce exactly (the mean of the decoded block scales differs from the
        // original's): the base moves by exactly the re-quantization error the restart reports, a small fraction of NF4's own.
        var o = Options(Path.Combine(_dir, "zero"), 4, 2, from);
        using var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant);
        using var trainer = new Trainer(Ctx, model, o, Data(o), Stories);
        var before = TargetWeights(model, o.Adapter);
        double lossBefore = trainer.Evaluate()!.Value;
        var aBefore = trainer.Parameters.ToHost(o.Adapter).Tensors[AdapterWeights.LoraA(0, TargetModule.Q)].Data;
        var r = trainer.Relora!.Restart(2, trainer.Parameters, o.Seed);
        var after = TargetWeights(model, o.Adapter);
        double lossAfter = trainer.Evaluate()!.Value;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{from}: reported ‖W − Q‖ = {r.ErrorNorm:G4} ({r.RelativeError:P3}); held-out loss {lossBefore:R} → {lossAfter:R}"));
        if (from == ReloraMergeFrom.Original)
        {
            for (int i = 0; i < before.Length; i++) Assert.Equal(before[i], after[i]);
            Assert.Equal(lossBefore, lossAfter);
            Assert.InRange(r.RelativeError, 0.01, 0.3);   // NF4+DQ's own error against W0 (about 9% on stories260K)
        }
        else
        {
            double moved = Math.Sqrt(before.Zip(after).Sum(p => p.First.Zip(p.Second).Sum(x => ((double)x.First - x.Second) * (x.First - x.Second))));
            Assert.Equal(moved, r.ErrorNorm, 1e-9 * Math.Max(1, moved));   // float64 sums of the same differences
            Assert.InRange(r.RelativeError, 0, 0.005);
            Assert.InRange(lossAfter - lossBefore, -1e-3, 1e-3);
        }
        // A is drawn afresh (another seed), B is zero again.
        var host = trainer.Parameters.ToHost(o.Adapter);
        Assert.NotEqual(aBefore, host.Tensors[AdapterWeights.LoraA(0, TargetModule.Q)].Data);
        Assert.All(host.Tensors[AdapterWeights.LoraB(0, TargetModule.Q)].Data, x => Assert.Equal(0f, x));
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void ResumeAcrossARestartIsBitExact() => ResumeAcrossARestartIsBitExactFrom(ReloraMergeFrom.Original);

    /// <summary>The same from the dequantized base: the restart path differs only in where the merge starts (kept out of the default tier for time).</summary>
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void ResumeAcrossARestartFromTheDequantizedBaseIsBitExact() => ResumeAcrossARestartIsBitExactFrom(ReloraMergeFrom.Dequantized);

    private void ResumeAcrossARestartIsBitExactFrom(ReloraMergeFrom from)
    {
        // Restarts after steps 2 and 4 of 6; the interrupted run stops at step 3 (one restart behind it) and resumes.
        var a = Path.Combine(_dir, "straight");
        var b = Path.Combine(_dir, "resumed");
        Train(Options(a, 6, 2, from));
        Train(Options(b, 6, 2, from), stopAfter: 3);
        Train(Options(b, 6, 2, from) with { Resume = true }, resume: true);
        var wa = AdapterIO.Load(a, Stories.Config);
        var wb = AdapterIO.Load(b, Stories.Config);
        foreach (var (name, t) in wa.Tensors) Assert.Equal(t.Data, wb.Tensors[name].Data);
        Assert.Equal(File.ReadAllLines(Path.Combine(a, "metrics.csv")).Select(l => string.Join(',', l.Split(',').Take(4))),
            File.ReadAllLines(Path.Combine(b, "metrics.csv")).Select(l => string.Join(',', l.Split(',').Take(4))));
        var files = new[] { "relora-base", "merged" }.SelectMany(d => Directory.GetFiles(Path.Combine(a, d)).Select(f => Path.Combine(d, Path.GetFileName(f))))
            .Append(ReloraRestarts.CyclesFile).ToList();
        Assert.Contains(files, f => f.EndsWith(".safetensors", StringComparison.Ordinal) && f.StartsWith("merged", StringComparison.Ordinal));
        foreach (var file in files) Assert.Equal(File.ReadAllBytes(Path.Combine(a, file)), File.ReadAllBytes(Path.Combine(b, file)));
    }

    [Fact]
    [Trait("Category", "Exhaustive")]
    public void AFinishedRunResumesWithMoreSteps()
    {
        // 4 steps with --relora-every 2 restart after step 2 only (never after the last step); raising --steps to 6
        // rebuilds that cycle from the checkpoint and does the restart step 4 now owes before training on.
        var dir = Path.Combine(_dir, "more");
        Train(Options(dir, 4, 2));
        Train(Options(dir, 6, 2) with { Resume = true }, resume: true);
        var relora = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!["relora"]!;
        Assert.Equal([2, 4], relora["restarts"]!.AsArray().Select(r => r!["step"]!.GetValue<int>()));
        Assert.Equal(7, File.ReadAllLines(Path.Combine(dir, "metrics.csv")).Length);
    }

    private void Train(TrainOptions o, int? stopAfter = null, bool resume = false)
    {
        using var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant);
        using var trainer = new Trainer(Ctx, model, o, Data(o), Stories);
        if (resume) trainer.ResumeFrom(o.Out);
        trainer.Run(stopAfterStep: stopAfter);
        if (stopAfter != null) trainer.SaveCheckpoint();
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void RecipeLowersHeldOutLossAndWritesTheMergedModel()
    {
        // The QLoRA recipe of TrainerTests (r = 8, alpha 16, all seven targets, lr 2e-3, 8 x 64, 20 steps) with a restart every
        // 5 steps (held-out loss 3.36 → 0.79 on lavapipe).
        var o = Options(Path.Combine(_dir, "run"), 20, 5);
        var data = Data(o);
        using var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant);
        TrainSummary s;
        var log = new List<string>();
        using (var trainer = new Trainer(Ctx, model, o, data, Stories) { Log = log.Add }) s = trainer.Run();
        foreach (var line in log) output.WriteLine(line);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"held-out loss {s.InitialEvalLoss:F4} → {s.EvalLoss:F4}"));
        Assert.True(s.EvalLoss < 0.5 * s.InitialEvalLoss, $"held-out loss {s.InitialEvalLoss} → {s.EvalLoss}");
        Assert.Contains(log, l => l.Contains("full-precision copy", StringComparison.Ordinal));
        Assert.Equal(3, log.Count(l => l.StartsWith("ReLoRA restart", StringComparison.Ordinal)));
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(o.Out, "summary.json")))!["relora"]!;
        Assert.Equal("original", summary["merge_from"]!.GetValue<string>());
        Assert.Equal([5, 10, 15], summary["restarts"]!.AsArray().Select(r => r!["step"]!.GetValue<int>()));

        // The base the last cycle's adapter was trained on is relora-base/: quantized again (q/k rows back in the
        // llama2.c layout the run used) it is the device base, bit for bit.
        var baseModel = ModelLoader.Load(Path.Combine(o.Out, "relora-base"));
        var (_, baseWeights) = ModelTensors.ToLayout(baseModel.Config, baseModel.Weights, Stories.Config.RopeLayout);
        using (var reloaded = DeviceLlama.Load(Ctx, Stories.Config, baseWeights, o.Quant))
        {
            var trained = TargetWeights(model, o.Adapter);
            var again = TargetWeights(reloaded, o.Adapter);
            for (int i = 0; i < trained.Length; i++) Assert.Equal(trained[i], again[i]);
        }
        // merged/ is that base plus the last cycle's s·B·A in float32: its held-out loss (no adapter, fp32) is the trained
        // model's up to the base's NF4 error, which on stories260K moves the loss by a few hundredths.
        var merged = ModelLoader.Load(Path.Combine(o.Out, "merged"));
        using var fp32 = DeviceLlama.Load(Ctx, merged.Config, merged.Weights, BaseQuant.None);
        using var runner = new LlamaRunner(fp32, o.Batch, o.SeqLen, kvCache: false);
        var mergedLoss = Evaluator.Evaluate(runner, [.. data.Eval.Select(w => new Evaluator.Window(w.Inputs, w.Targets))]).MeanNll;
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"merged fp32 model: held-out loss {mergedLoss:F4}"));
        Assert.InRange(mergedLoss, s.EvalLoss!.Value - 0.1, s.EvalLoss.Value + 0.1);
    }
}
