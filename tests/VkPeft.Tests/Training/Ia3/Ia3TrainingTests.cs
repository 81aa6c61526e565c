// (IA)³ end to end on the pretrained stories260K: the recipe lowers held-out loss on a distinctive pattern; `vkpeft
// train --method ia3` saves the PEFT-style feed-forward list, loads back as (IA)³, inference with the adapter equals the
// merged full-precision export, the PEFT IA3 folder round-trips; formats that cannot hold it and bad options are refused.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.Ia3;

[Collection("cli")]
public sealed class Ia3TrainingTests(ITestOutputHelper output) : StoriesRunTests("vkpeft-ia3-")
{
    [Fact]
    public void RecipeLowersHeldOutLossOnStories260K()
    {
        var host = ModelLoader.Load(Model);
        var tok = host.Tokenizer ?? throw new FileNotFoundException("stories260K tokenizer");
        var quant = BaseQuant.Parse("nf4-dq");
        var options = new TrainOptions
        {
            Data = WriteData(),
            EvalFraction = 0.15,
            Adapter = new AdapterConfig { Method = PeftMethods.Get("ia3"), Targets = Ia3Method.DefaultTargets, BaseQuant = quant, BaseModel = Model },
            Quant = quant,
            Steps = 20,
            Batch = 4,
            SeqLen = 32,
            Lr = 5e-2f,
            Warmup = 2,
            Out = Path.Combine(Dir, "run"),
            Seed = 7,
        };
        var data = TrainingData.Load(tok, options.Data, null, options.EvalFraction, options.SeqLen, options.Seed);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, quant);
        TrainSummary summary;
        using (var trainer = new Trainer(ctx, model, options, data)) summary = trainer.Run();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {summary.InitialEvalLoss:F4} → {summary.EvalLoss:F4} in {summary.Steps} steps, {summary.TrainableParameters} parameters"));
        var c = host.Config;
        Assert.Equal(c.NLayers * (2 * c.KvDim + c.HiddenDim), summary.TrainableParameters);
        Assert.True(summary.EvalLoss < 0.9 * summary.InitialEvalLoss, $"held-out loss {summary.InitialEvalLoss} → {summary.EvalLoss}");
    }

    // Ten commands end to end (~15 s here): the slow tier; the gradient, invariant and recipe checks stay in the default one.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TrainsSavesLoadsAndMergesThroughTheCommands()
    {
        var data = WriteData();
        var run = Path.Combine(Dir, "run");
        var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "ia3", "--quant", "none",
            "--steps", "3", "--batch", "4", "--seq-len", "32", "--lr", "5e-2", "--out", run);
        Assert.True(code == 0, err + text);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(run, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("ia3", json["method"]!.GetValue<string>());
        Assert.Equal(new[] { "down_proj" }, json["feedforward_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        var c = ModelLoader.Load(Model).Config;
        var loaded = AdapterIO.Load(run, c);
        Assert.Same(PeftMethods.Get("ia3"), loaded.Config.Method);
        Assert.Equal(Ia3Method.DefaultTargets, loaded.Config.Targets);
        Assert.Equal(new[] { TargetModule.Down }, Ia3Method.Feedforward(loaded.Config));
        Assert.Equal(new long[] { 1, c.HiddenDim }, loaded.Tensors[Ia3Method.VectorName(0, TargetModule.Down)].Shape);
        Assert.Equal(new long[] { c.KvDim, 1 }, loaded.Tensors[Ia3Method.VectorName(0, TargetModule.K)].Shape);
        Assert.All(loaded.Tensors.Values, t => Assert.Contains(t.Data, x => x != 1f));

        // Inference with the adapter equals the merged f32 export: only l·W rounded once vs l·(W·x) differ.
        double withAdapter = EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", run);
        double baseNll = EvalNll("--model", Model, "--data", data, "--quant", "none");
        Assert.NotEqual(baseNll, withAdapter);
        var merged = Path.Combine(Dir, "merged.bin");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "llama2c", "--dtype", "f32", "--merge-from", "original", "--out", merged);
        Assert.True(code == 0, err + text);
        double mergedNll = EvalNll("--model", merged, "--data", data, "--quant", "none");
        Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-4, string.Create(CultureInfo.InvariantCulture, $"merged {mergedNll} vs base+adapter {withAdapter}"));

        // PEFT's IA3 folder: config fields and tensor names as PEFT writes them; read back (the config holds no vkpeft
        // object, as PEFT itself writes it) to the same vectors, q/k rows converted through rotate-half and back.
        var peft = Path.Combine(Dir, "peft");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.True(code == 0, err + text);
        var peftJson = JsonNode.Parse(File.ReadAllText(Path.Combine(peft, AdapterIO.PeftConfigFile)))!.AsObject();
        Assert.Equal("IA3", peftJson["peft_type"]!.GetValue<string>());
        Assert.Equal(new[] { "k_proj", "v_proj", "down_proj" }, peftJson["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal(new[] { "down_proj" }, peftJson["feedforward_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        using (var st = VkPeft.Peft.Formats.SafeTensorsFile.Open(Path.Combine(peft, AdapterIO.WeightsFile)))
        {
            Assert.Equal(3 * c.NLayers, st.Tensors.Count);
            Assert.Equal(new long[] { 1, c.HiddenDim }, st.Info("base_model.model.model.layers.0.mlp.down_proj.ia3_l").Shape);
            Assert.Equal(new long[] { c.KvDim, 1 }, st.Info("base_model.model.model.layers.0.self_attn.k_proj.ia3_l").Shape);
        }
        Assert.False(peftJson.ContainsKey("vkpeft"));
        var fromPeft = AdapterIO.Load(peft, c);
        Assert.Same(PeftMethods.Get("ia3"), fromPeft.Config.Method);
        foreach (var (name, t) in loaded.Tensors) Assert.Equal(t.Data, fromPeft.Tensors[name].Data);
        Assert.Equal(withAdapter, EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", peft));

        // GGUF LoRA cannot hold it; a feed-forward module outside the targets is refused.
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "gguf-lora", "--out", Path.Combine(Dir, "a.gguf"));
        Assert.NotEqual(0, code);
        Assert.Contains("(IA)³", err + text);
        Assert.DoesNotContain("   at ", err + text);
        (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "ia3", "--targets", "k,v", "--steps", "1", "--out", Path.Combine(Dir, "bad"));
        Assert.NotEqual(0, code);
        Assert.Contains("--feedforward", err + text);
        Assert.DoesNotContain("   at ", err + text);
    }
}
