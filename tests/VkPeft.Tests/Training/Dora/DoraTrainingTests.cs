// DoRA end to end on the pretrained stories260K: the recipe lowers held-out loss with LoRA's tensors plus one magnitude
// per output row trained; resume is bit-exact; a folder as PEFT writes it (use_dora, lora_magnitude_vector without
// ".weight", rotate-half q/k rows, training dropout recorded) loads; and through the commands: train --dora, eval and
// generate with the adapter, the merged export matching base + adapter, PEFT export and read-back, merged GGUF and
// NF4 re-quantization, GGUF LoRA and bad options refused with the reason.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Dora;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.Dora;

[Collection("cli")]
public sealed class DoraTrainingTests(ITestOutputHelper output) : StoriesRunTests("vkpeft-dora-")
{
    private TrainOptions Options(string outDir, int steps, int saveEvery = 0)
    {
        var quant = BaseQuant.Parse("nf4-dq");
        return new TrainOptions
        {
            Data = WriteData(),
            EvalFraction = 0.15,
            Adapter = new AdapterConfig { Method = PeftMethods.Get("dora"), Settings = new LoraSettings { Rank = 4, Alpha = 8 }, BaseQuant = quant, BaseModel = Model },
            Quant = quant,
            Steps = steps,
            Batch = 4,
            SeqLen = 32,
            Lr = 1e-2f,
            Warmup = 2,
            SaveEvery = saveEvery,
            Out = outDir,
            Seed = 7,
        };
    }

    private static TrainSummary Train(VulkanContext ctx, LoadedModel host, TrainOptions o, int? stopAfter = null, bool resume = false)
    {
        var data = TrainingData.Load(host.Tokenizer!, o.Data, null, o.EvalFraction, o.SeqLen, o.Seed);
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, o.Quant);
        using var trainer = new Trainer(ctx, model, o, data);
        if (resume) trainer.ResumeFrom(o.Out);
        var s = trainer.Run(stopAfterStep: stopAfter);
        if (stopAfter != null) trainer.SaveCheckpoint();
        return s;
    }

    [Fact]
    public void RecipeLowersHeldOutLossAndResumesBitExactly()
    {
        var host = ModelLoader.Load(Model);
        var c = host.Config;
        using var ctx = new VulkanContext(GpuFixture.Options());
        var options = Options(Path.Combine(Dir, "run"), 12);   // held-out loss 4.17 → 0.52 on lavapipe
        var summary = Train(ctx, host, options);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {summary.InitialEvalLoss:F4} → {summary.EvalLoss:F4} in {summary.Steps} steps, {summary.TrainableParameters} parameters, {summary.TokensPerSecond:F0} tokens/s"));
        // LoRA's r·(in + out) per target plus one magnitude per output row, all seven targets.
        long perLayer = ModelTensors.LinearKinds.Sum(t => 4L * (c.LinearShape(t).In + c.LinearShape(t).Out) + c.LinearShape(t).Out);
        Assert.Equal(c.NLayers * perLayer, summary.TrainableParameters);
        Assert.True(summary.EvalLoss < 0.9 * summary.InitialEvalLoss, $"held-out loss {summary.InitialEvalLoss} → {summary.EvalLoss}");
        var trained = AdapterIO.Load(options.Out, c);
        Assert.Same(PeftMethods.Get("dora"), trained.Config.Method);
        Assert.Contains(trained.Tensors[DoraMethod.MagnitudeName(0, TargetModule.Q)].Data, v => v != 0);

        // Two steps, a checkpoint, then resumed to four: bit-identical to four straight steps.
        var straight = Options(Path.Combine(Dir, "straight"), 4);
        var resumed = Options(Path.Combine(Dir, "resumed"), 4);
        Train(ctx, host, straight);
        Train(ctx, host, resumed, stopAfter: 2);
        Train(ctx, host, resumed with { Resume = true }, resume: true);
        var wa = AdapterIO.Load(straight.Out, c);
        var wb = AdapterIO.Load(resumed.Out, c);
        Assert.Equal(wa.Tensors.Count, wb.Tensors.Count);
        foreach (var (name, t) in wa.Tensors) Assert.Equal(t.Data, wb.Tensors[name].Data);
    }

    // A folder laid out as PEFT saves a DoRA adapter: config with use_dora and PEFT's default training dropout, tensors
    // under PEFT's keys with the magnitude saved without ".weight" and q/k rows in rotate-half order.
    [Fact]
    public void LoadsAFolderAsPeftWritesIt()
    {
        var c = ModelLoader.Load(Model).Config;
        var dir = Path.Combine(Dir, "peft-written");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, AdapterIO.PeftConfigFile), """
            {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "lora_dropout": 0.05, "use_dora": true,
             "use_rslora": false, "bias": "none", "fan_in_fan_out": false, "target_modules": ["q_proj", "v_proj"],
             "base_model_name_or_path": "stories260K", "init_lora_weights": true, "inference_mode": true}
            """);
        var entries = new List<SafeTensorsWriter.Entry>();
        var expected = new Dictionary<string, float[]>();
        int seed = 1;
        foreach (var l in Enumerable.Range(0, c.NLayers))
            foreach (var t in new[] { TargetModule.Q, TargetModule.V })
            {
                var (outF, inF) = c.LinearShape(t);
                var a = TestData.Normal(2 * inF, seed++);
                var b = TestData.Normal(outF * 2, seed++);
                var m = TestData.Uniform(outF, seed++, 0.5f, 1.5f);
                entries.Add(SafeTensorsWriter.FromFloat32(AdapterIO.PeftKey(l, t, "A"), [2, inF], a));
                entries.Add(SafeTensorsWriter.FromFloat32(AdapterIO.PeftKey(l, t, "B"), [outF, 2], b));
                entries.Add(SafeTensorsWriter.FromFloat32(AdapterIO.PeftMagnitudeKey(l, t), [outF], m));
                expected[DoraMethod.MagnitudeName(l, t)] = m;
            }
        SafeTensorsWriter.Write(Path.Combine(dir, AdapterIO.WeightsFile), entries);
        Assert.EndsWith("self_attn.q_proj.lora_magnitude_vector", AdapterIO.PeftMagnitudeKey(0, TargetModule.Q));

        var loaded = AdapterIO.Load(dir, c);
        Assert.Same(PeftMethods.Get("dora"), loaded.Config.Method);
        Assert.Equal(0.05f, loaded.Config.SettingsOf<LoraSettings>().Dropout);
        // v rows as stored; q rows moved from rotate-half to stories260K's interleaved pairs (a permutation of the same values).
        Assert.Equal(expected[DoraMethod.MagnitudeName(0, TargetModule.V)], loaded.Tensors[DoraMethod.MagnitudeName(0, TargetModule.V)].Data);
        var q = loaded.Tensors[DoraMethod.MagnitudeName(0, TargetModule.Q)].Data;
        Assert.NotEqual(expected[DoraMethod.MagnitudeName(0, TargetModule.Q)], q);
        Assert.Equal(expected[DoraMethod.MagnitudeName(0, TargetModule.Q)].Order(), q.Order());

        // Written back as PEFT: the same keys and values, use_dora set; and read again to the same tensors.
        var again = Path.Combine(Dir, "again");
        AdapterIO.SavePeft(again, loaded, c);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(again, AdapterIO.PeftConfigFile)))!;
        Assert.True(json["use_dora"]!.GetValue<bool>());
        using (var st = SafeTensorsFile.Open(Path.Combine(again, AdapterIO.WeightsFile)))
            Assert.Equal(expected[DoraMethod.MagnitudeName(0, TargetModule.Q)], st.ReadFloat32(AdapterIO.PeftMagnitudeKey(0, TargetModule.Q)));
        var back = AdapterIO.Load(again, c);
        foreach (var (name, t) in loaded.Tensors) Assert.Equal(t.Data, back.Tensors[name].Data);

        // A magnitude missing is named.
        entries.RemoveAll(e => e.Name == AdapterIO.PeftMagnitudeKey(1, TargetModule.V));
        SafeTensorsWriter.Write(Path.Combine(dir, AdapterIO.WeightsFile), entries);
        var e = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(dir, c));
        Assert.Contains("lora_magnitude_vector", e.Message);
    }

    // A dozen commands end to end: the Exhaustive tier; gradients, invariants, the recipe and resume stay in the default one.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TrainsEvaluatesMergesAndExportsThroughTheCommands()
    {
        var data = WriteData();
        var run = Path.Combine(Dir, "run");
        var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "lora", "--dora", "--quant", "none",
            "--rank", "4", "--steps", "3", "--batch", "4", "--seq-len", "32", "--lr", "2e-2", "--out", run);
        Assert.True(code == 0, err + text);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(run, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("dora", json["method"]!.GetValue<string>());

        // Inference with the adapter equals the merged f32 export (fp32 rounding of the merged weights only).
        double withAdapter = EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", run);
        double baseNll = EvalNll("--model", Model, "--data", data, "--quant", "none");
        Assert.NotEqual(baseNll, withAdapter);
        var merged = Path.Combine(Dir, "merged.bin");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "llama2c", "--dtype", "f32", "--merge-from", "original", "--out", merged);
        Assert.True(code == 0, err + text);
        double mergedNll = EvalNll("--model", merged, "--data", data, "--quant", "none");
        Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-4, string.Create(CultureInfo.InvariantCulture, $"merged {mergedNll} vs base+adapter {withAdapter}"));
        (code, text, err) = Run("generate", "--model", Model, "--adapter", run, "--prompt", "Pip pip", "--max-tokens", "8", "--temperature", "0");
        Assert.True(code == 0, err + text);

        // PEFT folder: use_dora and lora_magnitude_vector; read back to the same evaluation.
        var peft = Path.Combine(Dir, "peft");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.True(code == 0, err + text);
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(peft, AdapterIO.PeftConfigFile)))!["use_dora"]!.GetValue<bool>());
        Assert.Equal(withAdapter, EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", peft));

        // Merged GGUF works and evaluates close to base + adapter (f16 weights); merge-and-quantize to NF4+DQ (dequantize,
        // merge, re-quantize) reports the largest weight error and the NLL it changes.
        var gguf = Path.Combine(Dir, "m.gguf");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "gguf", "--dtype", "f16", "--merge-from", "original", "--out", gguf);
        Assert.True(code == 0, err + text);
        double ggufNll = EvalNll("--model", gguf, "--data", data, "--quant", "none");
        Assert.True(Math.Abs(ggufNll - withAdapter) <= 2e-2, string.Create(CultureInfo.InvariantCulture, $"merged GGUF {ggufNll} vs base+adapter {withAdapter}"));
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "safetensors", "--dtype", "nf4-dq",
            "--check-data", data, "--out", Path.Combine(Dir, "nf4"));
        Assert.True(code == 0, err + text);
        output.WriteLine(text);
        Assert.Contains("max |weight error|", text);
        Assert.Contains("NLL", text, StringComparison.OrdinalIgnoreCase);

        // GGUF LoRA cannot hold DoRA; dropout, and --dora on another method, are refused.
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "gguf-lora", "--out", Path.Combine(Dir, "a.gguf"));
        Assert.NotEqual(0, code);
        Assert.Contains("DoRA", err + text);
        Assert.DoesNotContain("   at ", err + text);
        (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "lora", "--dora", "--dropout", "0.1", "--steps", "1", "--out", Path.Combine(Dir, "bad"));
        Assert.NotEqual(0, code);
        Assert.Contains("--dropout", err + text);
        Assert.DoesNotContain("   at ", err + text);
        (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "qalora", "--dora", "--steps", "1", "--out", Path.Combine(Dir, "bad2"));
        Assert.NotEqual(0, code);
        Assert.Contains("--dora", err + text);
        Assert.DoesNotContain("   at ", err + text);
    }
}
