// Prompt tuning end to end on the pretrained stories260K: the recipe lowers held-out loss on a distinctive pattern;
// resume with gradient accumulation and checkpointing is bit-exact; the PEFT PROMPT_TUNING folder round-trips and a config
// that disagrees with the model is refused naming the file and field; through the commands: train, eval and generate
// with --adapter, export to PEFT, and the refusals (merged and GGUF exports, zero virtual tokens).
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prompt;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.Prompt;

[Collection("cli")]
public sealed class PromptTuningTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-prompt-").FullName;

    private static string Model => SharedData.Path("models", "stories260K", "stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private TrainOptions Options(string outDir, int steps, int virtualTokens = 8) => new()
    {
        Data = TinyModels.WritePatternStories(_dir),
        EvalFraction = 0.15,
        Adapter = new AdapterConfig
        {
            Method = PeftMethods.Get("prompt"), Targets = [], BaseQuant = BaseQuant.Parse("nf4-dq"), BaseModel = Model,
            Settings = new PromptSettings(virtualTokens, PromptInit.Vocab),
        },
        Quant = BaseQuant.Parse("nf4-dq"),
        Steps = steps,
        Batch = 4,
        SeqLen = 32,
        Lr = 2e-1f,
        Warmup = 2,
        Out = outDir,
        Seed = 7,
    };

    private static TrainSummary Train(TrainOptions o, int? stopAfter = null, bool resume = false)
    {
        var host = ModelLoader.Load(Model);
        var data = TrainingData.Load(host.Tokenizer!, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, o.Quant);
        using var trainer = new Trainer(ctx, model, o, data);
        if (resume) trainer.ResumeFrom(o.Out);
        var s = trainer.Run(stopAfterStep: stopAfter);
        if (stopAfter != null) trainer.SaveCheckpoint();
        return s;
    }

    [Fact]
    public void RecipeLowersHeldOutLossOnStories260K()
    {
        var s = Train(Options(Path.Combine(_dir, "run"), 40));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {s.InitialEvalLoss:F4} → {s.EvalLoss:F4} in {s.Steps} steps, {s.TrainableParameters} parameters, {s.TokensPerSecond:F0} tokens/s"));
        Assert.Equal(8 * ModelLoader.Load(Model).Config.Dim, s.TrainableParameters);
        Assert.True(s.EvalLoss < 0.75 * s.InitialEvalLoss, $"held-out loss {s.InitialEvalLoss} → {s.EvalLoss}");
    }

    [Fact]
    public void ResumeWithAccumulationAndCheckpointingIsBitExact()
    {
        var a = Path.Combine(_dir, "straight");
        var b = Path.Combine(_dir, "resumed");
        TrainOptions O(string dir) => Options(dir, 4, virtualTokens: 5) with { GradAccum = 2, Checkpointing = true };
        Train(O(a));
        Train(O(b), stopAfter: 2);
        Train(O(b) with { Resume = true }, resume: true);
        var c = ModelLoader.Load(Model).Config;
        var wa = AdapterIO.Load(a, c).Tensors[PromptMethod.TensorName].Data;
        var wb = AdapterIO.Load(b, c).Tensors[PromptMethod.TensorName].Data;
        Assert.Equal(wa, wb);
        Assert.Equal(File.ReadAllText(Path.Combine(a, "metrics.csv")).Split('\n').Select(l => string.Join(',', l.Split(',').Take(3))),
            File.ReadAllText(Path.Combine(b, "metrics.csv")).Split('\n').Select(l => string.Join(',', l.Split(',').Take(3))));
    }

    [Fact]
    public void PeftFolderRoundTripsAndAConfigDisagreeingWithTheModelIsRefused()
    {
        var c = ModelLoader.Load(Model).Config;
        var cfg = Options(_dir, 1, virtualTokens: 6).Adapter;
        var adapter = new AdapterWeights(cfg);
        adapter.Tensors[PromptMethod.TensorName] = new HostTensor(TestData.Normal(6 * c.Dim, 3), [6, c.Dim]);
        var dir = Path.Combine(_dir, "peft");
        AdapterIO.SavePeft(dir, adapter, c);
        var cfgPath = Path.Combine(dir, AdapterIO.PeftConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(cfgPath))!.AsObject();
        Assert.Equal("PROMPT_TUNING", json["peft_type"]!.GetValue<string>());
        Assert.Equal(6, json["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal(c.Dim, json["token_dim"]!.GetValue<int>());
        Assert.Equal(c.NLayers, json["num_layers"]!.GetValue<int>());
        Assert.Equal(c.NHeads, json["num_attention_heads"]!.GetValue<int>());
        Assert.Equal("SAMPLE_VOCAB", json["prompt_tuning_init"]!.GetValue<string>());
        Assert.False(json.ContainsKey("vkpeft"));
        using (var st = SafeTensorsFile.Open(Path.Combine(dir, AdapterIO.WeightsFile)))
            Assert.Equal(new long[] { 6, c.Dim }, st.Info(PromptMethod.TensorName).Shape);
        var loaded = AdapterIO.Load(dir, c);
        Assert.Same(PeftMethods.Get("prompt"), loaded.Config.Method);
        Assert.Equal(6, PromptMethod.Settings(loaded.Config).VirtualTokens);
        Assert.Equal(adapter.Tensors[PromptMethod.TensorName].Data, loaded.Tensors[PromptMethod.TensorName].Data);

        string original = File.ReadAllText(cfgPath);
        foreach (var (field, value) in new[] { ("token_dim", 999), ("num_layers", 99), ("num_attention_heads", 3), ("num_virtual_tokens", 0), ("num_virtual_tokens", 7) })
        {
            var bad = JsonNode.Parse(original)!.AsObject();
            bad[field] = value;
            File.WriteAllText(cfgPath, bad.ToJsonString());
            var e = Assert.ThrowsAny<Exception>(() => AdapterIO.Load(dir, c));
            Assert.True(e is ModelFormatException, e.ToString());
            // 7 virtual tokens disagree with the 6-row tensor: the error names the weights file and tensor instead.
            Assert.Contains(field == "num_virtual_tokens" && value == 7 ? PromptMethod.TensorName : field, e.Message);
            Assert.Contains(field == "num_virtual_tokens" && value == 7 ? AdapterIO.WeightsFile : AdapterIO.PeftConfigFile, e.Message);
        }
    }

    // Commands end to end (~10 s here): the exhaustive tier; gradients, invariants and the recipe stay in the default one.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TrainsEvaluatesGeneratesAndExportsThroughTheCommands()
    {
        var data = TinyModels.WritePatternStories(_dir);
        var run = Path.Combine(_dir, "run");
        var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "prompt", "--virtual-tokens", "4",
            "--prompt-init", "text:Pip pip hooray!", "--steps", "3", "--batch", "4", "--seq-len", "32", "--lr", "5e-2", "--out", run);
        Assert.True(code == 0, err + text);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(run, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("prompt", json["method"]!.GetValue<string>());
        Assert.Equal(4, json["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal("text", json["prompt_init"]!.GetValue<string>());

        double withAdapter = EvalNll("--model", Model, "--data", data, "--adapter", run);
        double baseNll = EvalNll("--model", Model, "--data", data, "--quant", "nf4-dq");
        Assert.NotEqual(baseNll, withAdapter);
        (code, text, err) = Run("generate", "--model", Model, "--adapter", run, "--prompt", "Once upon a time", "--max-tokens", "8");
        Assert.True(code == 0, err + text);

        var peft = Path.Combine(_dir, "peft");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.True(code == 0, err + text);
        Assert.Equal("TEXT", JsonNode.Parse(File.ReadAllText(Path.Combine(peft, AdapterIO.PeftConfigFile)))!["prompt_tuning_init"]!.GetValue<string>());
        Assert.Equal(withAdapter, EvalNll("--model", Model, "--data", data, "--adapter", peft));

        foreach (var (format, file) in new[] { ("gguf-lora", "a.gguf"), ("llama2c", "merged.bin") })
        {
            (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", format, "--out", Path.Combine(_dir, file));
            Assert.NotEqual(0, code);
            Assert.Contains("prompt tuning", err + text);
            Assert.DoesNotContain("   at ", err + text);
        }
        (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "prompt", "--virtual-tokens", "0", "--steps", "1", "--out", Path.Combine(_dir, "bad"));
        Assert.NotEqual(0, code);
        Assert.Contains("--virtual-tokens", err + text);
        Assert.DoesNotContain("   at ", err + text);
    }
}
