// The training loop on the real stories260K: the QLoRA parity recipe lowers held-out loss, resume is bit-exact,
// checkpoints/metrics/plots are written, data formats and bad inputs are handled.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Cli;
using VkPeft.Peft.Data;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class TrainerTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-train-").FullName;
    private VulkanContext Ctx => gpu.Context;
    private static LoadedModel Stories => DeviceModelTests.Stories.Value;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Stories in a style the base has not seen: one per line.</summary>
    internal static string WriteData(string dir, int count, int seed)
    {
        var rng = new Random(seed);
        string[] names = ["Pip", "Bo", "Mina", "Toby", "Luna", "Max"], things = ["a red kite", "a blue cup", "a tiny bell", "a round stone"];
        var lines = Enumerable.Range(0, count).Select(_ =>
        {
            var n = names[rng.Next(names.Length)];
            var t = things[rng.Next(things.Length)];
            return $"Pip pip hooray! {n} found {t}. {n} gave {t} to a sad friend. Pip pip hooray, sharing is the best!";
        });
        var path = Path.Combine(dir, $"data{seed}.txt");
        File.WriteAllLines(path, lines);
        return path;
    }

    /// <summary><paramref name="a"/> with its LoRA settings changed.</summary>
    private static AdapterConfig WithLora(AdapterConfig a, Func<LoraSettings, LoraSettings> change) => a with { Settings = change(a.SettingsOf<LoraSettings>()) };

    private TrainOptions Options(string outDir, int steps, PeftMethod? method = null, BaseQuant? quant = null) => new()
    {
        Data = WriteData(_dir, 48, 1),
        EvalData = WriteData(_dir, 8, 2),
        Adapter = new AdapterConfig
        {
            Method = method ?? PeftMethod.Lora,
            Settings = (method ?? PeftMethod.Lora).DefaultSettings(quant ?? BaseQuant.Parse("nf4-dq")) is LoraSettings lora ? lora with { Rank = 8, Alpha = 16 } : null,
            BaseQuant = (quant ?? BaseQuant.Parse("nf4-dq")),
        },
        Quant = quant ?? BaseQuant.Parse("nf4-dq"),
        Steps = steps,
        Batch = 8,
        SeqLen = 64,
        Lr = 2e-3f,
        Warmup = 2,
        Out = outDir,
        Seed = 5,
    };

    private TrainSummary Train(TrainOptions o, int? stopAfter = null, bool resume = false)
    {
        var data = TrainingData.Load(Stories.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);
        using var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant);
        using var trainer = new Trainer(Ctx, model, o, data);
        if (resume) trainer.ResumeFrom(o.Out);
        var s = trainer.Run(stopAfterStep: stopAfter);
        if (stopAfter != null) trainer.SaveCheckpoint();
        return s;
    }

    [Fact]
    public void QloraRecipeLowersHeldOutLossAndWritesItsReports()
    {
        // The PyTorch-style recipe: NF4+DQ base, LoRA r=8, alpha=16, all seven targets, AdamW lr 2e-3, batch 8 x 64, 20 steps
        // (held-out loss 3.36 → 0.50 on lavapipe, well under the bound of half).
        var outDir = Path.Combine(_dir, "run");
        var s = Train(Options(outDir, 20));
        Assert.NotNull(s.InitialEvalLoss);
        Assert.True(s.EvalLoss < 0.5 * s.InitialEvalLoss, $"held-out loss {s.InitialEvalLoss} → {s.EvalLoss}");
        foreach (var f in new[] { "metrics.csv", "loss.svg", "summary.json", "vkpeft_adapter.json", "adapter_model.safetensors", Trainer.OptimizerFile, Trainer.StateFile })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "summary.json")))!;
        Assert.True(summary["peak_device_bytes"]!.GetValue<long>() > 0);
        Assert.True(summary["peak_device_bytes_by_category"]!["weights"]!.GetValue<long>() > 0);
        Assert.Equal(21, File.ReadAllLines(Path.Combine(outDir, "metrics.csv")).Length);
        Assert.Contains("<svg", File.ReadAllText(Path.Combine(outDir, "loss.svg")));
        // The adapter loads back and applies: eval with it matches the trainer's held-out loss.
        var adapter = AdapterIO.Load(outDir, Stories.Config);
        Assert.Equal(7 * Stories.Config.NLayers * 2, adapter.Tensors.Count);
        Assert.Equal("nf4-dq", adapter.Config.BaseQuant.Type);
    }

    [Fact]
    public void ResumeIsBitExact()
    {
        var a = Path.Combine(_dir, "straight");
        var b = Path.Combine(_dir, "resumed");
        Train(Options(a, 6) with { Lr = 1e-3f, Adapter = WithLora(Options(a, 6).Adapter, s => s with { Dropout = 0.1f }) });
        Train(Options(b, 6) with { Lr = 1e-3f, Adapter = WithLora(Options(b, 6).Adapter, s => s with { Dropout = 0.1f }) }, stopAfter: 3);
        Train(Options(b, 6) with { Lr = 1e-3f, Adapter = WithLora(Options(b, 6).Adapter, s => s with { Dropout = 0.1f }), Resume = true }, resume: true);
        var wa = AdapterIO.Load(a, Stories.Config);
        var wb = AdapterIO.Load(b, Stories.Config);
        foreach (var (name, t) in wa.Tensors) Assert.Equal(t.Data, wb.Tensors[name].Data);
        Assert.Equal(File.ReadAllText(Path.Combine(a, "metrics.csv")).Split('\n').Select(l => string.Join(',', l.Split(',').Take(3))),
            File.ReadAllText(Path.Combine(b, "metrics.csv")).Split('\n').Select(l => string.Join(',', l.Split(',').Take(3))));
    }

    [Fact]
    public void StepsWaitForTheHostOnlyWhenTheirStatusIsRead()
    {
        // Staged transfers (as on a discrete GPU) and no held-out data: between reads of the status rows the device runs
        // step after step (clipping decided on the device) and the host never waits; 18 steps are read in three stretches:
        // the first step alone (its time sizes the stretches), the next 16 (the ring is full) and the last. Two
        // micro-batches per step, clipping on every step.
        using var ctx = new VulkanContext(GpuFixture.Options() with { DisableHostMappedMemory = true });
        var o = Options(Path.Combine(_dir, "waits"), 18) with
        {
            EvalData = null, EvalFraction = 0, Batch = 2, SeqLen = 32, GradAccum = 2, Clip = 0.05f, Quant = BaseQuant.None,
            Adapter = Options(_dir, 1).Adapter with { BaseQuant = BaseQuant.None },
        };
        var data = TrainingData.Load(Stories.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);
        using var model = DeviceLlama.Load(ctx, Stories.Config, Stories.Weights, o.Quant);
        using var trainer = new Trainer(ctx, model, o, data) { StatusReadInterval = TimeSpan.FromHours(1) };
        ctx.Sync();
        long start = ctx.Commands.TotalWaits, ringStart = Transfers.RingWaits(ctx);
        var waitsAtReport = new List<long>();
        var reports = new List<StepReport>();
        trainer.Run(r => { waitsAtReport.Add(ctx.Commands.TotalWaits - start); reports.Add(r); });
        Assert.Equal(Enumerable.Range(1, 18), reports.Select(r => r.Step));
        Assert.Equal([1L, .. Enumerable.Repeat(2L, Trainer.StatusRingSteps), 3L], waitsAtReport);
        Assert.Equal(0, Transfers.RingWaits(ctx) - ringStart);
        Assert.All(reports, r => Assert.True(double.IsFinite(r.Loss) && r.Loss > 0 && r.GradNorm > 0, $"step {r.Step}: loss {r.Loss}, norm {r.GradNorm}"));
        // metrics.csv: one row per step with the reported loss and gradient norm, bit for bit.
        var rows = File.ReadAllLines(Path.Combine(o.Out, "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToList();
        Assert.Equal(reports.Select(r => (r.Step.ToString(CultureInfo.InvariantCulture), r.Loss.ToString("R", CultureInfo.InvariantCulture), r.GradNorm.ToString("R", CultureInfo.InvariantCulture))), rows.Select(c => (c[0], c[1], c[5])));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PackedOptimizerTrainsBitIdenticallyToThePerTensorOptimizer(bool optimizerOnHost)
    {
        // Clipping on every step (Clip tiny), so the one-dispatch norm also scales every update.
        var a = Path.Combine(_dir, $"packed{optimizerOnHost}");
        var b = Path.Combine(_dir, $"per-tensor{optimizerOnHost}");
        Train(Options(a, 3) with { Lr = 1e-2f, Clip = 0.05f, OptimizerOnHost = optimizerOnHost });
        Train(Options(b, 3) with { Lr = 1e-2f, Clip = 0.05f, OptimizerOnHost = optimizerOnHost, ParameterLayout = ParameterLayout.PerTensor });
        var wa = AdapterIO.Load(a, Stories.Config);
        var wb = AdapterIO.Load(b, Stories.Config);
        Assert.NotEmpty(wa.Tensors);
        foreach (var (name, t) in wa.Tensors) Assert.Equal(wb.Tensors[name].Data, t.Data);
        // Losses, learning rates and gradient norms (every column but tokens per second) equal to the last digit.
        static IEnumerable<string> Exact(string dir) =>
            File.ReadAllText(Path.Combine(dir, "metrics.csv")).Split('\n').Select(l => string.Join(',', l.Split(',').Where((_, i) => i != 4)));
        Assert.Equal(Exact(b), Exact(a));
    }

    [Fact]
    public void QaLoraTrainsOnAnInt4Base()
    {
        // stories260K's hidden size 172 = 4·43: groups of 4 divide every target's in_features. 15 steps take the held-out
        // loss from 3.30 to 1.46 on lavapipe.
        var o = Options(Path.Combine(_dir, "qa"), 15, PeftMethod.QaLora, BaseQuant.Parse("int4", 4));
        var s = Train(o with { Adapter = o.Adapter with { Settings = o.Adapter.SettingsOf<QaLoraSettings>() with { GroupSize = 4 } } });
        Assert.True(s.EvalLoss < 0.7 * s.InitialEvalLoss, $"held-out loss {s.InitialEvalLoss} → {s.EvalLoss}");
    }

    [Fact]
    public void BadOptionsAndDataGetClearErrors()
    {
        var o = Options(Path.Combine(_dir, "bad"), 5);
        Assert.Contains("--rank", Assert.Throws<FormatException>(() => (o with { Adapter = WithLora(o.Adapter, s => s with { Rank = 0 }) }).Validate()).Message);
        Assert.Contains("--quant int4", CliApp.UserError(Assert.Throws<SettingException>(() => (o with { Adapter = o.Adapter with { Method = PeftMethod.QaLora } }).Validate())));
        Assert.Contains("unknown target 'wq'", Assert.Throws<SettingException>(() => AdapterConfig.ParseTargets("q,wq")).Message);
        var empty = Path.Combine(_dir, "empty.txt");
        File.WriteAllText(empty, "\n  \n");
        Assert.Contains("no non-empty document", Assert.Throws<VkPeft.Peft.Formats.ModelFormatException>(() => TextDataset.Read(empty)).Message);
        var badJson = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllText(badJson, "{\"text\": \"ok\"}\n{not json\n");
        var e = Assert.Throws<VkPeft.Peft.Formats.ModelFormatException>(() => TextDataset.Read(badJson));
        Assert.Contains("line 2", e.Message);
        Assert.Contains("bad.jsonl", e.Message);
        // QA-LoRA group size that does not divide a target's in_features (down_proj: 172 of stories260K).
        var qa = Options(Path.Combine(_dir, "qa-bad"), 2, PeftMethod.QaLora, BaseQuant.Parse("int4", 32));
        var err = Assert.Throws<SettingException>(() => Train(qa));
        Assert.Contains("--group-size 32 does not divide in_features 172 of target down", CliApp.UserError(err));
    }

    [Fact]
    public void InstructionRecordsPredictOnlyTheResponse()
    {
        var path = Path.Combine(_dir, "inst.jsonl");
        File.WriteAllText(path, "{\"instruction\": \"Say hi.\", \"output\": \"Hi there.\"}\n{\"prompt\": \"Q: 2+2?\\n\", \"completion\": \"4\"}\n");
        var records = TextDataset.Read(path);
        var tok = Stories.Tokenizer!;
        var d = TextDataset.Tokenize(tok, records[0]);
        Assert.Equal(tok.Eos, d.Tokens[^1]);
        Assert.False(d.Predict[0]);
        int promptLen = tok.Encode("Say hi.\n", bos: true).Length;
        Assert.All(d.Predict.Take(promptLen), p => Assert.False(p));
        Assert.True(d.Predict[^1]);
        var windows = TrainingData.Pack([d], 32);
        Assert.Single(windows);
        Assert.Equal(d.Predict.Count(p => p), windows[0].Targets.Count(t => t >= 0));
    }

    [Fact]
    public void CorruptCheckpointOnResumeIsAClearError()
    {
        var outDir = Path.Combine(_dir, "corrupt");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, Trainer.StateFile), "{ not json");
        var e = Assert.Throws<VkPeft.Peft.Formats.ModelFormatException>(() => Train(Options(outDir, 2) with { Resume = true }, resume: true));
        Assert.Contains(Trainer.StateFile, e.Message);
    }
}
