// Bias and norm tuning end to end on the pretrained stories260K: the recipe lowers held-out loss; resume is bit-exact;
// `vkpeft train --method norm / bias --norms` save the vkpeft format, `eval`/`generate --adapter` apply it, a merged
// export (tuned norms; biases as the model's own tensors) equals the base plus the adapter, and what a format cannot
// hold is refused with its reason.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.BiasNorm;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.BiasNorm;

[Collection("cli")]
public sealed class BiasNormTrainingTests(ITestOutputHelper output) : StoriesRunTests("vkpeft-biasnorm-")
{
    private static string Tokenizer => SharedData.Path("models", "stories260K", "tok512.bin");

    private TrainOptions Options(string run, int steps, bool checkpointing = false)
    {
        var quant = BaseQuant.Parse("nf4-dq");
        return new TrainOptions
        {
            Data = WriteData(),
            EvalFraction = 0.15,
            Adapter = new AdapterConfig
            {
                Method = BiasNormMethod.Bias, Targets = Enum.GetValues<TargetModule>(), Settings = new BiasNormSettings(true), BaseQuant = quant, BaseModel = Model,
            },
            Quant = quant,
            Steps = steps,
            Batch = 4,
            SeqLen = 32,
            Lr = 3e-2f,
            Warmup = 2,
            Checkpointing = checkpointing,
            Out = Path.Combine(Dir, run),
            Seed = 7,
        };
    }

    private static TrainSummary Train(TrainOptions options, int? stopAfter = null, bool resume = false)
    {
        var host = ModelLoader.Load(Model);
        var data = TrainingData.Load(host.Tokenizer!, options.Data, null, options.EvalFraction, options.SeqLen, options.Seed);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, options.Quant);
        using var trainer = new Trainer(ctx, model, options, data);
        if (resume) trainer.ResumeFrom(options.Out);
        var summary = trainer.Run(stopAfterStep: stopAfter);
        if (stopAfter != null) trainer.SaveCheckpoint();
        return summary;
    }

    [Fact]
    public void RecipeLowersHeldOutLossOnStories260K()
    {
        var summary = Train(Options("run", 20));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {summary.InitialEvalLoss:F4} → {summary.EvalLoss:F4} in {summary.Steps} steps, {summary.TrainableParameters} parameters, {summary.TokensPerSecond:F0} tokens/s"));
        var c = ModelLoader.Load(Model).Config;
        long biases = c.NLayers * (c.QDim + 2L * c.KvDim + c.Dim + 2L * c.HiddenDim + c.Dim), norms = (2L * c.NLayers + 1) * c.Dim;
        Assert.Equal(biases + norms, summary.TrainableParameters);
        Assert.True(summary.EvalLoss < 0.9 * summary.InitialEvalLoss, $"held-out loss {summary.InitialEvalLoss} → {summary.EvalLoss}");
    }

    // `train` applies every option of the method with its value: the --norms switch off means biases only.
    [Fact]
    public void TheNormsSwitchFollowsItsValue()
    {
        var cfg = new AdapterConfig { Method = BiasNormMethod.Bias, BaseQuant = BaseQuant.Parse("nf4-dq") };
        var norms = Assert.Single(BiasNormMethod.Bias.Options);
        Assert.Equal("--norms", norms.Flag);
        Assert.False(BiasNormMethod.Bias.TrainsNorms(norms.Apply(cfg, bool.FalseString)));
        Assert.True(BiasNormMethod.Bias.TrainsNorms(norms.Apply(cfg, bool.TrueString)));
        Assert.True(BiasNormMethod.Norm.TrainsNorms(cfg with { Method = BiasNormMethod.Norm }));
        var c = ModelLoader.Load(Model).Config;
        Assert.DoesNotContain(BiasNormMethod.Bias.Parameters(c, norms.Apply(cfg, bool.FalseString)), p => p.Name.EndsWith(".delta", StringComparison.Ordinal));
    }

    // With checkpointing (recomputed forwards form the effective norm weights again): 2 steps, save, resume, 2 more.
    [Fact]
    public void ResumeIsBitExact()
    {
        Train(Options("straight", 4, checkpointing: true));
        Train(Options("resumed", 4, checkpointing: true), stopAfter: 2);
        Train(Options("resumed", 4, checkpointing: true) with { Resume = true }, resume: true);
        var c = ModelLoader.Load(Model).Config;
        var a = AdapterIO.Load(Path.Combine(Dir, "straight"), c);
        var b = AdapterIO.Load(Path.Combine(Dir, "resumed"), c);
        Assert.Equal(a.Tensors.Keys.Order(), b.Tensors.Keys.Order());
        foreach (var (name, t) in a.Tensors)
        {
            Assert.Contains(t.Data, x => x != 0f);
            Assert.Equal(t.Data, b.Tensors[name].Data);
        }
    }

    // Eight commands end to end: the slow tier; the gradient, invariant, recipe and resume checks stay in the default one.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TrainsSavesLoadsAndMergesThroughTheCommands()
    {
        var data = WriteData();
        var c = ModelLoader.Load(Model).Config;

        // Norm tuning: saved as deltas, applied by eval/generate --adapter, merged into every model format.
        var norm = Path.Combine(Dir, "norm");
        var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "norm", "--quant", "none",
            "--steps", "3", "--batch", "4", "--seq-len", "32", "--lr", "5e-2", "--out", norm);
        Assert.True(code == 0, err + text);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(norm, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("norm", json["method"]!.GetValue<string>());
        Assert.True(json["train_norms"]!.GetValue<bool>());
        Assert.Null(json["target_modules"]);   // no linear adapted: none listed
        var loaded = AdapterIO.Load(norm, c);
        Assert.Same(BiasNormMethod.Norm, loaded.Config.Method);
        Assert.Equal(2 * c.NLayers + 1, loaded.Tensors.Count);
        Assert.All(loaded.Tensors.Values, t => Assert.Contains(t.Data, x => x != 0f));

        double withAdapter = EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", norm);
        double baseNll = EvalNll("--model", Model, "--data", data, "--quant", "none");
        Assert.NotEqual(baseNll, withAdapter);
        foreach (var (format, file) in new[] { ("llama2c", "merged.bin"), ("gguf", "merged.gguf"), ("safetensors", "merged-hf") })
        {
            var merged = Path.Combine(Dir, file);
            (code, text, err) = Run("export", "--model", Model, "--adapter", norm, "--format", format, "--dtype", "f32", "--merge-from", "original", "--out", merged);
            Assert.True(code == 0, format + ": " + err + text);
            double mergedNll = EvalNll(["--model", merged, "--data", data, "--quant", "none", .. format == "safetensors" ? new[] { "--tokenizer", Tokenizer } : []]);
            // base + delta rounded once to float32 against adding it on the device: the same sum, equal to rounding.
            Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-5, string.Create(CultureInfo.InvariantCulture, $"{format}: merged {mergedNll} vs base+adapter {withAdapter}"));
        }
        (code, text, err) = Run("generate", "--model", Model, "--adapter", norm, "--quant", "none", "--prompt", "Once upon a time", "--max-tokens", "8", "--temperature", "0");
        Assert.True(code == 0, err + text);
        Assert.StartsWith("Once upon a time", text.TrimStart());

        // Bias tuning with the norms: the vkpeft format round-trips; merged models carry the biases as their own tensors
        // (Hugging Face attention_bias/mlp_bias with zero o/k/gate/up biases, GGUF attn_*/ffn_*.bias) and load back.
        var bias = Path.Combine(Dir, "bias");
        (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "bias", "--targets", "q,v,down", "--norms", "--quant", "none",
            "--steps", "2", "--batch", "4", "--seq-len", "32", "--lr", "5e-2", "--out", bias);
        Assert.True(code == 0, err + text);
        loaded = AdapterIO.Load(bias, c);
        Assert.Equal(new[] { TargetModule.Q, TargetModule.V, TargetModule.Down }, loaded.Config.Targets);
        Assert.True(BiasNormMethod.Bias.TrainsNorms(loaded.Config));
        Assert.Equal(new long[] { c.KvDim }, loaded.Tensors[BiasNormMethod.BiasName(0, TargetModule.V)].Shape);
        withAdapter = EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", bias);
        Assert.NotEqual(baseNll, withAdapter);
        foreach (var (format, file) in new[] { ("gguf", "bias.gguf"), ("safetensors", "bias-hf") })
        {
            var merged = Path.Combine(Dir, file);
            (code, text, err) = Run("export", "--model", Model, "--adapter", bias, "--format", format, "--dtype", "f32", "--merge-from", "original", "--out", merged);
            Assert.True(code == 0, format + ": " + err + text);
            var m = ModelLoader.Load(merged);
            Assert.True(m.Config.AttentionBias && m.Config.OutputBias && m.Config.MlpBias, format);
            Assert.All(m.Weights.Layers, lw => Assert.All(lw.Bo!, x => Assert.Equal(0f, x)));
            Assert.Contains(m.Weights.Layers[0].BDown!, x => x != 0f);
            double mergedNll = EvalNll(["--model", merged, "--data", data, "--quant", "none", .. format == "safetensors" ? new[] { "--tokenizer", Tokenizer } : []]);
            // The same fp32 bias adds and norm weights; the Hugging Face layout reorders q/k rows (summation order only).
            Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-5, string.Create(CultureInfo.InvariantCulture, $"{format}: merged {mergedNll} vs base+adapter {withAdapter}"));
        }
        foreach (var (format, reason) in new[] { ("peft", "PEFT"), ("gguf-lora", "GGUF LoRA"), ("llama2c", "no biases") })
        {
            (code, text, err) = Run("export", "--model", Model, "--adapter", bias, "--format", format, "--out", Path.Combine(Dir, "refused-" + format));
            Assert.NotEqual(0, code);
            Assert.Contains(reason, err + text);
            Assert.DoesNotContain("   at ", err + text);
        }
    }
}
