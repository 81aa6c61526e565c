// Faults during training and export on the real stories260K at tiny settings: a full disk, a lost or exhausted device
// and a poisoned gradient (every method) end with a clear error and the last checkpoint intact; a corrupt newest
// checkpoint falls back to the older kept one bit-exactly; resuming a finished run is a no-op; one run per folder.
using System.Diagnostics;
using VkPeft.Cli;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Bottleneck;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Cli;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;
using VkPeft.Tests.Training;

namespace VkPeft.Tests.Reliability;

[Collection("gpu")]
public sealed class TrainingFaultTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-faults-").FullName;
    private VulkanContext Ctx => gpu.Context;
    private static LoadedModel Stories => DeviceModelTests.Stories.Value;

    public void Dispose()
    {
        FaultInjection.Set(null);
        Directory.Delete(_dir, recursive: true);
    }

    private TrainOptions Options(string name, int steps, string method = "lora") => new()
    {
        Data = TrainerTests.WriteData(_dir, 12, 1),
        EvalFraction = 0,
        Adapter = new AdapterConfig
        {
            Method = PeftMethods.Get(method),
            Settings = PeftMethods.Get(method).DefaultSettings(BaseQuant.Parse("int4", 4)) switch
            {
                LoraSettings lora => lora with { Rank = 4, Alpha = 8 },   // QA-LoRA's in groups of 4
                BottleneckSettings bottleneck => bottleneck with { Bottleneck = 4 },
                var other => other,
            },
            BaseQuant = method == "qalora" ? BaseQuant.Parse("int4", 4) : BaseQuant.Parse("nf4-dq"),
        },
        Quant = method == "qalora" ? BaseQuant.Parse("int4", 4) : BaseQuant.Parse("nf4-dq"),
        Steps = steps,
        Batch = 2,
        SeqLen = 16,
        Lr = 1e-3f,
        SaveEvery = 1,
        Out = Path.Combine(_dir, name),
        Seed = 3,
    };

    private Trainer NewTrainer(TrainOptions o, DeviceLlama model) =>
        new(Ctx, model, o, TrainingData.Load(Stories.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed));

    private void Train(TrainOptions o, bool resume = false, int? stopAfter = null)
    {
        using var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant);
        using var trainer = NewTrainer(o, model);
        if (resume) trainer.ResumeFrom(o.Out);
        trainer.Run(stopAfterStep: stopAfter);
    }

    private static float[][] AdapterValues(string dir) =>
        [.. AdapterIO.Load(dir, Stories.Config).Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value.Data)];

    [Fact]
    public void DiskFullDuringACheckpointKeepsThePreviousOne() => DiskFull(thenResume: false);

    [Fact]
    [Trait("Category", "Exhaustive")]
    public void DiskFullDuringACheckpointKeepsThePreviousOneAndResumesBitExactly() => DiskFull(thenResume: true);

    private void DiskFull(bool thenResume)
    {
        var o = Options("diskfull", 3);
        using (var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant))
        using (var trainer = NewTrainer(o, model))
        {
            trainer.Run(stopAfterStep: 1);
            FaultInjection.Set("disk-full:" + TrainCheckpoint.OptimizerFile);
            var e = Assert.Throws<SettingIOException>(() => trainer.Run());
            FaultInjection.Set(null);
            Assert.Contains("step 2", e.Message);
            Assert.Contains("(step 1) is intact", e.Message);
            Assert.Contains("No space left on device", e.Message);
            Assert.EndsWith("free disk space, then rerun with --resume", CliApp.UserError(e), StringComparison.Ordinal);
        }
        Assert.Equal([1], TrainCheckpoint.Steps(o.Out));
        TrainCheckpoint.VerifyManifest(TrainCheckpoint.FolderOf(o.Out, 1));
        Assert.Empty(Directory.GetDirectories(Path.Combine(o.Out, TrainCheckpoint.CheckpointsFolder), ".staging-*"));
        Assert.Empty(Directory.GetFiles(o.Out, "*.tmp-*"));
        if (!thenResume) return;

        // With space again, --resume finishes exactly as a run that never failed.
        Train(o with { Resume = true }, resume: true);
        Train(o with { Out = Path.Combine(_dir, "diskfull-straight") });
        Assert.Equal(AdapterValues(Path.Combine(_dir, "diskfull-straight")), AdapterValues(o.Out));
    }

    [Theory]
    [InlineData("device-lost", "the device was lost during step 2")]
    [InlineData("device-oom", "after lowering --batch or --seq-len, or adding --checkpointing, --loss-chunk 32, --offload-checkpoints or --optimizer-on-host (`vkpeft plan` finds a fit)")]
    public void DeviceFailureMidStepIsAClearErrorWithTheCheckpointIntact(string fault, string expected)
    {
        var o = Options(fault, 3);
        FaultInjection.Set(fault + ":2");
        var e = Assert.Throws<TrainingFaultException>(() => Train(o));
        FaultInjection.Set(null);
        // The library names the settings to change; the command line prints them as flags.
        string shown = CliApp.UserError(e)!;
        Assert.Contains(expected, shown);
        Assert.Contains("(step 1) is intact", shown);
        Assert.Contains("rerun the same command with --resume", shown);
        Assert.Contains($"rerun the same command with {TrainSettings.Resume}", e.Message);
        Assert.Equal(shown, SettingFlags.Message(e));
        TrainCheckpoint.VerifyManifest(TrainCheckpoint.FolderOf(o.Out, 1));
        Assert.Equal(1, TrainCheckpoint.LatestStep(o.Out));
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("qalora")]
    [InlineData("adapter")]
    public void PoisonedGradientStopsEveryMethodWithTheLastGoodCheckpoint(string method)
    {
        var o = Options("nan-" + method, 3, method);
        FaultInjection.Set("nan-grad:2");
        var e = Assert.Throws<NonFiniteLossException>(() => Train(o));
        FaultInjection.Set(null);
        Assert.Contains("step 2", e.Message);
        Assert.Contains("(step 1) is intact", e.Message);
        Assert.EndsWith("is intact. Try a lower --lr or --clip.", CliApp.UserError(e), StringComparison.Ordinal);
        Assert.Equal(1, TrainCheckpoint.LatestStep(o.Out));
        TrainCheckpoint.VerifyManifest(TrainCheckpoint.FolderOf(o.Out, 1));
    }

    [Fact]
    [Trait("Category", "Exhaustive")]
    public void CorruptNewestCheckpointFallsBackToTheOlderOneBitExactly()
    {
        var o = Options("corrupt", 4);
        Train(o, stopAfter: 3);
        Assert.Equal([3, 2], TrainCheckpoint.Steps(o.Out));
        string optimizer = Path.Combine(TrainCheckpoint.FolderOf(o.Out, 3), TrainCheckpoint.OptimizerFile);
        byte[] bytes = File.ReadAllBytes(optimizer);
        bytes[^5] ^= 0x10;
        File.WriteAllBytes(optimizer, bytes);

        var warnings = new List<string>();
        using (var model = DeviceLlama.Load(Ctx, Stories.Config, Stories.Weights, o.Quant))
        using (var trainer = NewTrainer(o with { Resume = true }, model))
        {
            trainer.ResumeFrom(o.Out, warnings.Add);
            Assert.Equal(2, trainer.CompletedSteps);
            trainer.Run();
        }
        Assert.Contains(warnings, w => w.Contains("checksum mismatch", StringComparison.Ordinal) && w.Contains("step 2", StringComparison.Ordinal));
        Train(o with { Out = Path.Combine(_dir, "corrupt-straight") });
        Assert.Equal(AdapterValues(Path.Combine(_dir, "corrupt-straight")), AdapterValues(o.Out));
    }

    [Fact]
    public void CorruptCheckpointWithNoOlderOneIsAClearError()
    {
        // Only one checkpoint kept and it is corrupt: a clear error naming the file.
        var single = Options("corrupt-single", 2) with { KeepCheckpoints = 1 };
        Train(single);
        string state = Path.Combine(TrainCheckpoint.FolderOf(single.Out, 2), TrainCheckpoint.StateFile);
        File.AppendAllText(state, " ");
        var e = Assert.Throws<ModelFormatException>(() => Train(single with { Resume = true, Steps = 3 }, resume: true));
        Assert.Contains(TrainCheckpoint.StateFile, e.Message);
        Assert.EndsWith("(no older checkpoint is kept; see --keep-checkpoints)", CliApp.UserError(e), StringComparison.Ordinal);
    }

    [Fact]
    public void ExportIntoAFullDiskLeavesNoFileAtTheFinalPath()
    {
        string target = Path.Combine(_dir, "merged.gguf");
        FaultInjection.Set("disk-full:merged.gguf");
        var e = Assert.Throws<IOException>(() => Exporter.Export(Stories, null, new ExportOptions { Format = ExportFormat.Gguf, OutPath = target }));
        FaultInjection.Set(null);
        Assert.NotNull(CliApp.UserError(e));
        Assert.False(File.Exists(target));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp-*"));
    }
}

/// <summary>The CLI side: resuming a finished run, and two runs on one output folder.</summary>
[Collection("cli")]
public sealed class TrainCliFaultTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-faults-cli-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string[] TrainArgs(string outDir, params string[] more) =>
        ["train", "--model", Model, "--data", TrainerTests.WriteData(_dir, 12, 1), "--steps", "2", "--batch", "2", "--seq-len", "16",
            "--eval-fraction", "0", "--out", outDir, .. more];

    [Fact]
    public void ResumingAFinishedRunIsACleanNoOp()
    {
        string o = Path.Combine(_dir, "done");
        var (code, _, err) = CliTests.Run(TrainArgs(o));
        Assert.True(code == 0, err);
        byte[] adapter = File.ReadAllBytes(Path.Combine(o, AdapterIO.WeightsFile));
        (code, var output, err) = CliTests.Run(TrainArgs(o, "--resume"));
        Assert.True(code == 0, err);
        Assert.Contains("already reached step 2 of --steps 2; nothing to do", output);
        Assert.Equal(adapter, File.ReadAllBytes(Path.Combine(o, AdapterIO.WeightsFile)));
    }

    [Fact]
    public void SecondRunOnTheSameFolderIsRefusedAndAStaleLockIsTakenOver()
    {
        string o = Path.Combine(_dir, "locked");
        using (RunLock.Acquire(o))
        {
            var (code, _, err) = CliTests.Run(TrainArgs(o));
            Assert.Equal(2, code);
            Assert.Contains($"is in use by another vkpeft run (pid {Environment.ProcessId}", err);
            Assert.Single(err.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
            Assert.DoesNotContain("   at ", err);
        }

        // A lock held by another process that then dies (SIGKILL, no cleanup) is free to take.
        if (!File.Exists("/usr/bin/flock")) return;
        using var holder = Process.Start(new ProcessStartInfo("/usr/bin/flock", ["-x", Path.Combine(o, RunLock.FileName), "sleep", "60"]))!;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            try
            {
                RunLock.Acquire(o).Dispose();
                Thread.Sleep(50);   // flock has not taken it yet
            }
            catch (RunLockedException)
            {
                break;
            }
        }
        Assert.Throws<RunLockedException>(() => RunLock.Acquire(o));
        holder.Kill(entireProcessTree: true);
        holder.WaitForExit();
        // The lock is free once every holder is gone (flock's child `sleep` shares it and dies a moment later).
        RunLock? taken = null;
        for (var since = Stopwatch.StartNew(); taken is null && since.Elapsed < TimeSpan.FromSeconds(10); Thread.Sleep(20))
        {
            try { taken = RunLock.Acquire(o); }
            catch (RunLockedException) { }
        }
        Assert.NotNull(taken);
        using var _ = taken;
        Assert.Contains($"pid {Environment.ProcessId}", File.ReadAllText(Path.Combine(o, RunLock.OwnerFileName)));
    }
}
