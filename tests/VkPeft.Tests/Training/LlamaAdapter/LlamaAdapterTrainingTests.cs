// LLaMA-Adapter end to end on the pretrained stories260K: the recipe lowers held-out loss on a distinctive pattern; the
// PEFT ADAPTION_PROMPT folder (config fields and tensor names as PEFT writes them) and the vkpeft folder round-trip bit
// for bit; bad configurations and options are refused naming the file and field; merged and GGUF LoRA exports are
// refused with a one-line reason; and (exhaustive tier) train → eval → export → eval → generate through the commands.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using Xunit.Abstractions;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.LlamaAdapter;

[Collection("cli")]
public sealed class LlamaAdapterTrainingTests(ITestOutputHelper output) : StoriesRunTests("vkpeft-llama-adapter-")
{
    private static AdapterConfig Config(int len, int? layers) => new()
    {
        Method = PeftMethods.Get("llama-adapter"), Targets = [], Settings = new LlamaAdapterSettings(len, layers),
        BaseQuant = BaseQuant.Parse("nf4-dq"), BaseModel = Model,
    };

    /// <summary>An adapter with random prompts and gates (as if trained) for <paramref name="c"/>.</summary>
    private static AdapterWeights RandomAdapter(LlamaConfig c, AdapterConfig cfg)
    {
        var a = new AdapterWeights(cfg);
        int seed = 40;
        foreach (var spec in cfg.Method.Parameters(c, cfg))
            a.Tensors[spec.Name] = new HostTensor(TestData.Normal((int)spec.Count, seed++), spec.Shape);
        return a;
    }

    // 20 steps at lr 5e-2 on the "Pip pip hooray" stories: measured 4.17 → 2.99 held-out (−28%); the bound asks for 15%.
    [Fact]
    public void RecipeLowersHeldOutLossOnStories260K()
    {
        var host = ModelLoader.Load(Model);
        var tok = host.Tokenizer ?? throw new FileNotFoundException("stories260K tokenizer");
        var cfg = Config(LlamaAdapterMethod.DefaultAdapterLen, null);
        var options = new TrainOptions
        {
            Data = WriteData(),
            EvalFraction = 0.15,
            Adapter = cfg,
            Quant = cfg.BaseQuant,
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
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, cfg.BaseQuant);
        TrainSummary summary;
        using (var trainer = new Trainer(ctx, model, options, data)) summary = trainer.Run();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"held-out loss {summary.InitialEvalLoss:F4} → {summary.EvalLoss:F4} in {summary.Steps} steps, {summary.TrainableParameters} parameters, {summary.TokensPerSecond:F0} tokens/s"));
        var c = host.Config;
        Assert.Equal(c.NLayers * (LlamaAdapterMethod.DefaultAdapterLen * c.Dim + 1), summary.TrainableParameters);
        Assert.True(summary.EvalLoss < 0.85 * summary.InitialEvalLoss, $"held-out loss {summary.InitialEvalLoss} → {summary.EvalLoss}");
    }

    [Fact]
    public void PeftAndVkPeftFoldersRoundTripBitForBit()
    {
        var c = ModelLoader.Load(Model).Config;
        var cfg = Config(7, 3);
        var adapter = RandomAdapter(c, cfg);
        var peft = Path.Combine(Dir, "peft");
        AdapterIO.SavePeft(peft, adapter, c);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(peft, AdapterIO.PeftConfigFile)))!.AsObject();
        Assert.Equal("ADAPTION_PROMPT", json["peft_type"]!.GetValue<string>());
        Assert.Equal("self_attn", json["target_modules"]!.GetValue<string>());
        Assert.Equal(7, json["adapter_len"]!.GetValue<int>());
        Assert.Equal(3, json["adapter_layers"]!.GetValue<int>());
        Assert.Equal("CAUSAL_LM", json["task_type"]!.GetValue<string>());
        Assert.False(json.ContainsKey("vkpeft"));
        using (var st = SafeTensorsFile.Open(Path.Combine(peft, AdapterIO.WeightsFile)))
        {
            Assert.Equal(2 * 3, st.Tensors.Count);   // PEFT: two tensors per adapted layer, the top three
            Assert.Equal(new long[] { 1, 7, c.Dim }, st.Info($"base_model.model.model.layers.{c.NLayers - 1}.self_attn.adaption_prompt").Shape);
            Assert.Equal(new long[] { 1 }, st.Info($"base_model.model.model.layers.{c.NLayers - 3}.self_attn.adaption_gate").Shape);
        }
        var vk = Path.Combine(Dir, "vk");
        AdapterIO.SaveVkPeft(vk, adapter, c);
        foreach (var dir in new[] { peft, vk })
        {
            var loaded = AdapterIO.Load(dir, c);
            Assert.Same(cfg.Method, loaded.Config.Method);
            Assert.Equal(LlamaAdapterMethod.Settings(cfg).AdapterLen, LlamaAdapterMethod.Settings(loaded.Config).AdapterLen);
            Assert.Equal(3, LlamaAdapterMethod.AdaptedLayers(loaded.Config, c.NLayers));
            Assert.Equal(adapter.Tensors.Keys.Order(), loaded.Tensors.Keys.Order());
            foreach (var (name, t) in adapter.Tensors) Assert.Equal(t.Data, loaded.Tensors[name].Data);
        }
    }

    [Fact]
    public void BadConfigurationsNameTheFileAndField()
    {
        var c = ModelLoader.Load(Model).Config;
        var peft = Path.Combine(Dir, "peft");
        AdapterIO.SavePeft(peft, RandomAdapter(c, Config(4, 2)), c);
        var cfgPath = Path.Combine(peft, AdapterIO.PeftConfigFile);
        var original = File.ReadAllText(cfgPath);
        void Refused(string field, string value, string expected)
        {
            var json = JsonNode.Parse(original)!.AsObject();
            json[field] = JsonNode.Parse(value);
            File.WriteAllText(cfgPath, json.ToJsonString());
            var e = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(peft, c));
            Assert.Contains(AdapterIO.PeftConfigFile, e.Message);
            Assert.Contains(expected, e.Message);
        }
        Refused("adapter_len", "0", "adapter_len");
        Refused("adapter_layers", (c.NLayers + 1).ToString(CultureInfo.InvariantCulture), "adapter_layers");
        Refused("adapter_layers", "0", "adapter_layers");
        Refused("adapter_layers", "null", "adapter_layers");
        Refused("target_modules", "\"mlp\"", "target_modules");
        File.WriteAllText(cfgPath, original);

        // A base whose hidden size disagrees with the prompts: the tensor is named.
        var (other, _) = TinyModels.Random(3, dim: 32, layers: c.NLayers);
        var shape = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(peft, other));
        Assert.Contains("adaption_prompt", shape.Message);
        Assert.Contains(AdapterIO.WeightsFile, shape.Message);

        // The command line: a prompt length of 0 and more adapter layers than the model has, each a one-line error.
        var data = WriteData();
        foreach (var (flag, value) in new[] { ("--adapter-len", "0"), ("--adapter-layers", (c.NLayers + 1).ToString(CultureInfo.InvariantCulture)) })
        {
            var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "llama-adapter", flag, value, "--steps", "1",
                "--out", Path.Combine(Dir, "bad" + flag));
            Assert.NotEqual(0, code);
            Assert.Contains(flag, err + text);
            Assert.DoesNotContain("   at ", err + text);
        }
    }

    [Fact]
    public void MergedAndGgufLoraExportsAreRefusedWithAReason()
    {
        var c = ModelLoader.Load(Model).Config;
        var vk = Path.Combine(Dir, "vk");
        AdapterIO.SaveVkPeft(vk, RandomAdapter(c, Config(4, null)), c);
        foreach (var (format, expected) in new[] { ("llama2c", "cannot be merged"), ("safetensors", "cannot be merged"), ("gguf", "cannot be merged"), ("gguf-lora", "GGUF LoRA") })
        {
            var target = Path.Combine(Dir, "out-" + format);
            var (code, text, err) = Run("export", "--model", Model, "--adapter", vk, "--format", format, "--out", target);
            Assert.NotEqual(0, code);
            Assert.Contains(expected, err + text);
            Assert.Contains("LLaMA-Adapter", err + text);
            Assert.Single((err + text).Trim().Split('\n'));
            Assert.False(Path.Exists(target), $"{format}: nothing may be written");
        }
    }

    // Several commands end to end: the exhaustive tier; gradients, invariants, recipe and round trips stay in the default one.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void TrainsEvaluatesExportsAndGeneratesThroughTheCommands()
    {
        var data = WriteData();
        var run = Path.Combine(Dir, "run");
        var (code, text, err) = Run("train", "--model", Model, "--data", data, "--method", "llama-adapter", "--adapter-len", "6", "--adapter-layers", "3",
            "--steps", "4", "--batch", "4", "--seq-len", "32", "--lr", "5e-2", "--checkpointing", "--out", run);
        Assert.True(code == 0, err + text);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(run, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("llama-adapter", json["method"]!.GetValue<string>());
        Assert.Equal(6, json["adapter_len"]!.GetValue<int>());
        Assert.Equal(3, json["adapter_layers"]!.GetValue<int>());

        double baseNll = EvalNll("--model", Model, "--data", data);
        double withAdapter = EvalNll("--model", Model, "--data", data, "--adapter", run);
        Assert.NotEqual(baseNll, withAdapter);
        var peft = Path.Combine(Dir, "peft");
        (code, text, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.True(code == 0, err + text);
        Assert.Equal(withAdapter, EvalNll("--model", Model, "--data", data, "--adapter", peft));

        (code, text, err) = Run("generate", "--model", Model, "--adapter", peft, "--prompt", "Pip pip", "--max-tokens", "20", "--temperature", "0");
        Assert.True(code == 0, err + text);
        Assert.StartsWith("Pip pip", text);
    }
}
