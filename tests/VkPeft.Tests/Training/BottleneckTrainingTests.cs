// Bottleneck adapters in the training loop on the pretrained stories260K: the held-out loss falls, the saved adapter
// loads back identically and reproduces the held-out loss, and `vkpeft train --method adapter` runs from the CLI.
using System.Globalization;
using VkPeft.Cli;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Bottleneck;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class BottleneckTrainingTests(GpuFixture gpu, ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-bottleneck-").FullName;
    private VulkanContext Ctx => gpu.Context;

    private static string ModelPath => SharedData.Stories260K("stories260K.bin");

    /// <summary>Short stories in one distinctive pattern (one per line), unlike what stories260K was trained on.</summary>
    private string WriteData()
    {
        string[] names = ["Pip", "Mo", "Tess", "Bo", "Lulu", "Kit"];
        string[] places = ["the pond", "the red barn", "the big hill", "the garden"];
        string[] things = ["a blue shell", "a tiny drum", "a shiny key", "a soft hat"];
        var lines = new List<string>();
        foreach (var n in names)
            foreach (var p in places)
                foreach (var t in things)
                    lines.Add($"Pip pip hooray! {n} went to {p} and found {t}. {n} said pip pip hooray and ran home with {t}.");
        var path = Path.Combine(_dir, "stories.txt");
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void HoulsbyAdapterTrainingLowersHeldOutLossAndRoundTrips()
    {
        var host = ModelLoader.Load(ModelPath);
        var tok = host.Tokenizer ?? throw new FileNotFoundException("stories260K tokenizer");
        var quant = BaseQuant.Parse("nf4-dq");
        var options = new TrainOptions
        {
            Data = WriteData(),
            EvalFraction = 0.15,
            Adapter = new AdapterConfig
            {
                Method = PeftMethod.Adapter,
                Settings = new BottleneckSettings { Kind = BottleneckKind.Houlsby, Bottleneck = 8, Activation = BottleneckActivation.Silu },
                BaseQuant = quant, BaseModel = ModelPath,
            },
            Quant = quant,
            Steps = 20,   // held-out loss 3.53 → 1.78 on lavapipe
            Batch = 4,
            SeqLen = 32,
            Lr = 5e-3f,
            Warmup = 3,
            Checkpointing = true,
            Out = Path.Combine(_dir, "run"),
            Seed = 7,
        };
        var data = TrainingData.Load(tok, options.Data, null, options.EvalFraction, options.SeqLen, options.Seed);
        using var model = DeviceLlama.Load(Ctx, host.Config, host.Weights, quant);
        double trainedEval;
        AdapterWeights trained;
        TrainSummary summary;
        using (var trainer = new Trainer(Ctx, model, options, data))
        {
            summary = trainer.Run();
            trainedEval = trainer.Evaluate()!.Value;
            trained = trainer.Parameters.ToHost(options.Adapter);
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {summary.InitialEvalLoss:F4} → {summary.EvalLoss:F4} in {summary.Steps} steps, final train loss {summary.FinalTrainLoss:F4}, {summary.TrainableParameters} parameters"));
        Assert.True(summary.EvalLoss < 0.75 * summary.InitialEvalLoss, $"held-out loss {summary.InitialEvalLoss} → {summary.EvalLoss}");
        Assert.Equal(host.Config.NLayers * 2 * (2 * 8 * host.Config.Dim + 8 + host.Config.Dim), summary.TrainableParameters);

        // Save → load: same configuration, same tensors, and the loaded adapter reproduces the held-out loss.
        var loaded = AdapterIO.Load(options.Out, host.Config);
        Assert.Equal(PeftMethod.Adapter, loaded.Config.Method);
        Assert.Equal(BottleneckKind.Houlsby, loaded.Config.SettingsOf<BottleneckSettings>().Kind);
        Assert.Equal(8, loaded.Config.SettingsOf<BottleneckSettings>().Bottleneck);
        Assert.Equal(BottleneckActivation.Silu, loaded.Config.SettingsOf<BottleneckSettings>().Activation);
        Assert.Equal(trained.Tensors.Keys.Order(), loaded.Tensors.Keys.Order());
        foreach (var (name, t) in trained.Tensors)
        {
            Assert.Equal(t.Shape, loaded.Tensors[name].Shape);
            Assert.Equal(t.Data, loaded.Tensors[name].Data);
        }
        Assert.Contains(trained.Tensors, kv => kv.Key.EndsWith(".up", StringComparison.Ordinal) && kv.Value.Data.Any(x => x != 0));

        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        foreach (var (name, t) in loaded.Tensors) p.Add(name, t.Shape, t.Data);
        using var adapter = (BottleneckRuntime)loaded.Config.Method.CreateRuntime(Ctx, host.Config, loaded.Config, p, options.Batch * options.SeqLen);
        using var runner = new LlamaRunner(model, Math.Min(options.Batch, data.Eval.Count), options.SeqLen, kvCache: false) { Adapter = adapter };
        double reloadedEval = Evaluator.Evaluate(runner, [.. data.Eval.Select(w => new Evaluator.Window(w.Inputs, w.Targets))]).MeanNll;
        Assert.Equal(trainedEval, reloadedEval, 6);
    }

    [Fact]
    public void CliTrainsAParallelAdapterAndGeneratesWithIt()
    {
        var dataPath = WriteData();
        var outDir = Path.Combine(_dir, "cli");
        int rc = CliApp.Run(
        [
            "train", "--model", ModelPath, "--data", dataPath, "--method", "adapter", "--adapter-kind", "parallel", "--bottleneck", "4",
            "--steps", "3", "--batch", "2", "--seq-len", "24", "--lr", "3e-3", "--checkpointing", "false", "--out", outDir, "--validation",
        ]);
        Assert.Equal(0, rc);
        var host = ModelLoader.Load(ModelPath);
        var loaded = AdapterIO.Load(outDir, host.Config);
        Assert.Equal(BottleneckKind.Parallel, loaded.Config.SettingsOf<BottleneckSettings>().Kind);
        Assert.Equal(host.Config.NLayers * 4, loaded.Tensors.Count);
        Assert.All(loaded.Tensors.Keys, k => Assert.Contains(".mlp.", k, StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(outDir, "metrics.csv")));

        rc = CliApp.Run(["generate", "--model", ModelPath, "--adapter", outDir, "--prompt", "Pip pip hooray!", "--max-tokens", "8", "--validation"]);
        Assert.Equal(0, rc);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }
}
