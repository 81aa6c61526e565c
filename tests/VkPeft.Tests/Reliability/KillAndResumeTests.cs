// Kill anywhere: `vkpeft train` runs as a child process and is killed with SIGKILL at random points (during steps,
// checkpoint writes and report writes), resumed each time, and must end with an adapter bit-identical to an
// uninterrupted run; after every kill each checkpoint folder verifies and no partial file sits at a final path.
using System.Diagnostics;
using VkPeft.Peft.Export;
using VkPeft.Peft.Training;
using VkPeft.Tests.Cli;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;
using VkPeft.Tests.Training;
using Xunit.Abstractions;

namespace VkPeft.Tests.Reliability;

[Collection("cli")]
public sealed class KillAndResumeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-kill-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");
    private static string CliDll => Path.Combine(AppContext.BaseDirectory, "vkpeft.dll");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The default tier kills once (two child processes); the Exhaustive tier kills 30 times over a longer run.
    [Fact]
    public void KilledOnceAtARandomPointEndsBitIdentical() => KillLoop(kills: 1, steps: 4, seed: 1);

    [Fact]
    [Trait("Category", "Exhaustive")]
    public void KilledManyTimesAtRandomPointsEndsBitIdentical() => KillLoop(kills: 30, steps: 40, seed: 2);

    // In-process, TrainingFaultTests proves the same message and its CLI mapping; this adds the real exit code.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public async Task DeviceLostInTheRealProcessExitsNonZeroWithOneLine()
    {
        string data = TrainerTests.WriteData(_dir, 12, 1);
        string run = Path.Combine(_dir, "lost");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in (string[])[CliDll, .. Args(run, data, 3)]) psi.ArgumentList.Add(a);
        psi.Environment["VKPEFT_FAULT"] = "device-lost:2";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        _ = child.StandardOutput.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await child.WaitForExitAsync(timeout.Token);
        string err = await stderr;
        Assert.Equal(2, child.ExitCode);
        string line = Assert.Single(err.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains("the device was lost during step 2", line);
        Assert.Contains("(step 1) is intact", line);
        Assert.DoesNotContain("   at ", err);
        TrainCheckpoint.VerifyManifest(TrainCheckpoint.FolderOf(run, 1));
    }

    private string[] Args(string outDir, string data, int steps) =>
        ["train", "--model", Model, "--data", data, "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--batch", "2",
            "--seq-len", "16", "--eval-fraction", "0", "--save-every", "1", "--dropout", "0.1", "--lr", "1e-3", "--seed", "7", "--out", outDir];

    private void KillLoop(int kills, int steps, int seed)
    {
        string data = TrainerTests.WriteData(_dir, 12, 1);
        string reference = Path.Combine(_dir, "reference");
        var (code, _, err) = CliTests.Run(Args(reference, data, steps));
        Assert.True(code == 0, err);

        string run = Path.Combine(_dir, "killed");
        var rng = new Random(seed);
        int killed = 0, starts = 0;
        while (true)
        {
            Assert.True(++starts <= kills + 3, $"the run did not finish after {starts - 1} starts");
            bool resume = TrainCheckpoint.LatestStep(run) > 0;
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in (string[])[CliDll, .. Args(run, data, steps), .. resume ? new[] { "--resume" } : []]) psi.ArgumentList.Add(a);
            // The children run the same shaders the in-process tests run under the validation layer; without it each
            // start is ~1.5 s faster and the test is about crash consistency.
            psi.Environment.Remove("VKPEFT_VALIDATION");
            using var child = Process.Start(psi)!;
            var stderr = new System.Text.StringBuilder();
            using var started = new ManualResetEventSlim();
            child.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (stderr) stderr.AppendLine(e.Data);
                if (e.Data.StartsWith("data:", StringComparison.Ordinal)) started.Set();
            };
            child.OutputDataReceived += (_, _) => { };
            child.BeginErrorReadLine();
            child.BeginOutputReadLine();
            if (killed < kills)
            {
                // Wait until this start has written a checkpoint of its own (training is under way), then kill after a
                // uniform delay of up to a few steps: it lands in steps, checkpoint writes and report writes alike.
                started.Wait(TimeSpan.FromSeconds(60));
                int before = TrainCheckpoint.LatestStep(run);
                var wait = Stopwatch.StartNew();
                while (!child.HasExited && TrainCheckpoint.LatestStep(run) <= before && wait.Elapsed < TimeSpan.FromMinutes(2)) Thread.Sleep(1);
                int delay = rng.Next(0, 150);
                if (!child.WaitForExit(delay))
                {
                    child.Kill();
                    child.WaitForExit();
                    killed++;
                    output.WriteLine($"start {starts}{(resume ? " (--resume)" : "")}: SIGKILL {delay} ms after its first checkpoint; newest checkpoint step {TrainCheckpoint.LatestStep(run)}");
                    CheckNothingPartial(run);
                    continue;
                }
            }
            Assert.True(child.WaitForExit(TimeSpan.FromMinutes(5)), "child did not finish");
            child.WaitForExit();
            string log;
            lock (stderr) log = stderr.ToString();
            Assert.True(child.ExitCode == 0, $"exit {child.ExitCode}: {log}");
            output.WriteLine($"start {starts}{(resume ? " (--resume)" : "")}: finished");
            break;
        }

        Assert.True(killed == kills, $"only {killed} of {kills} kills landed before the run finished");
        var expected = AdapterIO.Load(reference, DeviceModelTests.Stories.Value.Config);
        var actual = AdapterIO.Load(run, DeviceModelTests.Stories.Value.Config);
        foreach (var (name, t) in expected.Tensors) Assert.Equal(t.Data, actual.Tensors[name].Data);
        Assert.Equal(File.ReadAllBytes(Path.Combine(TrainCheckpoint.FolderOf(reference, steps), TrainCheckpoint.OptimizerFile)),
            File.ReadAllBytes(Path.Combine(TrainCheckpoint.FolderOf(run, steps), TrainCheckpoint.OptimizerFile)));
        output.WriteLine($"{killed} kills, {starts} starts, zero divergence");
    }

    /// <summary>After a kill: every checkpoint folder verifies, and each final file present is complete.</summary>
    private static void CheckNothingPartial(string run)
    {
        foreach (int step in TrainCheckpoint.Steps(run)) TrainCheckpoint.VerifyManifest(TrainCheckpoint.FolderOf(run, step));
        if (File.Exists(Path.Combine(run, AdapterIO.WeightsFile)) && File.Exists(Path.Combine(run, AdapterIO.VkPeftConfigFile)))
            AdapterIO.Load(run, DeviceModelTests.Stories.Value.Config);
        if (File.Exists(Path.Combine(run, TrainCheckpoint.OptimizerFile)))
            VkPeft.Peft.Formats.SafeTensorsFile.Open(Path.Combine(run, TrainCheckpoint.OptimizerFile)).Dispose();
        foreach (string json in new[] { TrainCheckpoint.StateFile, "summary.json" })
            if (File.Exists(Path.Combine(run, json))) System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Path.Combine(run, json))).Dispose();
    }
}
