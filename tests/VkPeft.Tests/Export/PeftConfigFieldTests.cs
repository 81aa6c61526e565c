// PEFT adapter folders that PEFT's own loaders take without warnings: adapter_config.json holds only LoraConfig /
// IA3Config fields, vkpeft's metadata sits in the safetensors __metadata__, base_model_name_or_path is a repo id or a
// name (never a relative path), and folders written the older way (top-level "vkpeft" object) or by PEFT itself load.
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Models;
using VkPeft.Tests.Models;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class PeftConfigFieldTests
{
    // Fields of PeftConfigMixin and PeftConfig (huggingface/peft src/peft/config.py) that every adapter config may hold.
    private static readonly string[] PeftConfigFields =
        ["task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode"];

    // LoraConfig's dataclass fields (huggingface/peft src/peft/tuners/lora/config.py, v0.17).
    private static readonly string[] LoraConfigFields =
    [
        "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora",
        "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
        "megatron_config", "megatron_core", "trainable_token_indices", "loftq_config", "eva_config", "corda_config", "use_dora",
        "use_qalora", "qalora_group_size", "layer_replication", "runtime_config", "lora_bias", "target_parameters",
    ];

    // IA3Config's dataclass fields (huggingface/peft src/peft/tuners/ia3/config.py, v0.17).
    private static readonly string[] Ia3ConfigFields =
        ["target_modules", "exclude_modules", "feedforward_modules", "fan_in_fan_out", "modules_to_save", "init_ia3_weights"];

    private static void Save(AdapterWeights a, string path) =>
        Exporter.Export(Base, a, new ExportOptions { Format = ExportFormat.Peft, OutPath = path });

    private static string[] ConfigKeys(string dir)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, AdapterIO.PeftConfigFile)));
        return [.. doc.RootElement.EnumerateObject().Select(p => p.Name)];
    }

    private static AdapterWeights RandomIa3(LlamaConfig c, int seed)
    {
        var method = PeftMethods.Get("ia3");
        var cfg = new AdapterConfig
        {
            Method = method,
            Targets = [TargetModule.K, TargetModule.V, TargetModule.Down],
            Settings = new Ia3Settings([TargetModule.Down]),
            BaseQuant = new BaseQuant("nf4", 64),
            BaseModel = "stories260K",
        };
        var rng = new Random(seed);
        var a = new AdapterWeights(cfg);
        foreach (var spec in method.Parameters(c, cfg))
        {
            int n = (int)spec.Shape.Aggregate(1L, (x, y) => x * y);
            a.Tensors[spec.Name] = new HostTensor([.. Enumerable.Range(0, n).Select(_ => 1f + (float)(rng.NextDouble() - 0.5))], spec.Shape);
        }
        return a;
    }

    /// <summary>Rewrites a folder as an older vkpeft wrote it: a top-level "vkpeft" object, no vkpeft_* safetensors metadata.</summary>
    private static void MakeOldStyle(string dir, bool withVkPeftObject)
    {
        string cfgPath = Path.Combine(dir, AdapterIO.PeftConfigFile), wPath = Path.Combine(dir, AdapterIO.WeightsFile);
        var json = JsonNode.Parse(File.ReadAllText(cfgPath))!.AsObject();
        using (var f = SafeTensorsFile.Open(wPath))
        {
            Assert.Equal("nf4", f.Metadata["vkpeft_base_quantization"]);
            if (withVkPeftObject)
                json["vkpeft"] = new JsonObject
                {
                    ["format_version"] = AdapterIO.FormatVersion,
                    ["method"] = f.Metadata["vkpeft_method"],
                    ["base_quantization"] = new JsonObject { ["type"] = "nf4", ["blocksize"] = 64 },
                    ["base_rope_layout"] = f.Metadata["vkpeft_base_rope_layout"],
                    ["qk_rows"] = "rotate_half",
                };
        }
        RewriteWeights(wPath, metadata: null);
        File.WriteAllText(cfgPath, json.ToJsonString());
    }

    /// <summary>Writes a safetensors file again with the same F32 tensors and only <paramref name="metadata"/> (plus "format").</summary>
    private static void RewriteWeights(string wPath, Dictionary<string, string>? metadata)
    {
        var entries = new List<SafeTensorsWriter.Entry>();
        using (var f = SafeTensorsFile.Open(wPath))
            foreach (var (name, info) in f.Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                entries.Add(SafeTensorsWriter.FromFloat32(name, info.Shape, f.ReadFloat32(name)));
        SafeTensorsWriter.Write(wPath, entries, metadata);
    }

    private static string SettingsJson(AdapterConfig a) =>
        a.Settings is { } s ? System.Text.Json.JsonSerializer.Serialize(s, s.GetType()) : "null";

    private static void SameConfig(AdapterConfig expected, AdapterConfig actual)
    {
        Assert.Same(expected.Method, actual.Method);
        // The settings record (rank, alpha, rsLoRA, dropout and QA-LoRA's group size; (IA)³'s feed-forward list), compared by value.
        Assert.Equal((SettingsJson(expected), expected.BaseQuant, expected.BaseModel), (SettingsJson(actual), actual.BaseQuant, actual.BaseModel));
        Assert.Equal(expected.Targets, actual.Targets);
    }

    [Fact]
    public void LoraAndQaLoraConfigsHoldOnlyLoraConfigFieldsAndMetadataGoesToSafetensors()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var allowed = PeftConfigFields.Concat(LoraConfigFields).ToHashSet(StringComparer.Ordinal);
        Save(RandomLora(c, 1, rank: 4, alpha: 8), dir.File("lora"));
        var (qalora, _) = QaLoraForQ4_1(2);
        Save(qalora, dir.File("qalora"));
        foreach (var name in new[] { "lora", "qalora" })
        {
            var keys = ConfigKeys(dir.File(name));
            Assert.DoesNotContain(keys, k => !allowed.Contains(k));
            Assert.Contains("peft_type", keys);
            using var f = SafeTensorsFile.Open(Path.Combine(dir.File(name), AdapterIO.WeightsFile));
            Assert.Equal("pt", f.Metadata["format"]);
            Assert.Equal(AdapterIO.FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture), f.Metadata["vkpeft_format_version"]);
            Assert.Equal("rotate_half", f.Metadata["vkpeft_qk_rows"]);
        }
        Assert.Contains("use_qalora", ConfigKeys(dir.File("qalora")));
        Assert.Equal(qalora.Config.BaseQuant, AdapterIO.Load(dir.File("qalora"), c).Config.BaseQuant);
    }

    [Fact]
    public void Ia3ConfigHoldsOnlyIa3ConfigFields()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapter = RandomIa3(c, 3);
        Save(adapter, dir.File("ia3"));
        var allowed = PeftConfigFields.Concat(Ia3ConfigFields).ToHashSet(StringComparer.Ordinal);
        Assert.DoesNotContain(ConfigKeys(dir.File("ia3")), k => !allowed.Contains(k));
        var back = AdapterIO.Load(dir.File("ia3"), c);
        SameTensors(adapter, back);
        Assert.Equal(new BaseQuant("nf4", 64), back.Config.BaseQuant);
    }

    [Fact]
    public void OldStyleAndPeftWrittenFoldersLoadLikeNewOnes()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        foreach (var (kind, adapter) in new[] { ("lora", RandomLora(c, 4, rank: 2, alpha: 4)), ("ia3", RandomIa3(c, 5)) })
        {
            string fresh = dir.File(kind + "-new"), old = dir.File(kind + "-old"), peft = dir.File(kind + "-peft");
            Save(adapter, fresh);
            Save(adapter, old);
            Save(adapter, peft);
            MakeOldStyle(old, withVkPeftObject: true);
            MakeOldStyle(peft, withVkPeftObject: false);
            var fromNew = AdapterIO.Load(fresh, c);
            var fromOld = AdapterIO.Load(old, c);
            var fromPeft = AdapterIO.Load(peft, c);
            SameTensors(adapter, fromNew);
            SameTensors(fromNew, fromOld);
            SameTensors(fromNew, fromPeft);
            SameConfig(fromNew.Config, fromOld.Config);
            Assert.Equal(new BaseQuant("nf4", 64), fromOld.Config.BaseQuant);
            // PEFT's own folders record no base quantization.
            SameConfig(fromNew.Config with { BaseQuant = new BaseQuant("none", 64) }, fromPeft.Config);
        }
    }

    [Fact]
    public void BadBaseQuantizationInSafetensorsMetadataIsNamed()
    {
        using var dir = new TempDir();
        string outDir = dir.File("peft");
        Save(RandomLora(Base.Config, 6, rank: 2), outDir);
        RewriteWeights(Path.Combine(outDir, AdapterIO.WeightsFile), new Dictionary<string, string> { ["vkpeft_base_quantization"] = "q9" });
        var e = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(outDir, Base.Config));
        Assert.Contains("vkpeft_base_quantization", e.Message);
        Assert.Contains("q9", e.Message);
    }

    [Fact]
    public void BaseModelNameIsARepoIdOrANameNeverARelativePath()
    {
        using var dir = new TempDir();
        string hf = dir.File("llama-hf"), plain = dir.File("plain-model"), single = dir.File("stories260K.bin");
        Directory.CreateDirectory(hf);
        File.WriteAllText(Path.Combine(hf, "config.json"), """{"_name_or_path": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "model_type": "llama"}""");
        Directory.CreateDirectory(plain);
        File.WriteAllText(Path.Combine(plain, "config.json"), """{"_name_or_path": "/home/someone/checkpoints/run7", "model_type": "llama"}""");
        File.WriteAllBytes(single, [0]);
        Assert.Equal("TinyLlama/TinyLlama-1.1B-Chat-v1.0", AdapterIO.PeftBaseModelName(hf));
        Assert.Equal("TinyLlama/TinyLlama-1.1B-Chat-v1.0", AdapterIO.PeftBaseModelName(hf + "/"));
        Assert.Equal("plain-model", AdapterIO.PeftBaseModelName(plain));
        Assert.Equal("stories260K", AdapterIO.PeftBaseModelName(single));
        Assert.Equal("stories260K", AdapterIO.PeftBaseModelName("../models/stories260K.bin"));
        Assert.Equal("Qwen2.5-0.5B", AdapterIO.PeftBaseModelName("Qwen2.5-0.5B"));
        Assert.Equal("meta-llama/Llama-2-7b-hf", AdapterIO.PeftBaseModelName("meta-llama/Llama-2-7b-hf"));
        Assert.Equal("run7", AdapterIO.PeftBaseModelName("./out/checkpoints/run7"));

        // Written into adapter_config.json: the file stem of the single-file base, read back as such.
        var random = RandomLora(Base.Config, 7, rank: 2);
        var adapter = new AdapterWeights(random.Config with { BaseModel = single });
        foreach (var (name, t) in random.Tensors) adapter.Tensors[name] = t;
        Save(adapter, dir.File("peft"));
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir.File("peft"), AdapterIO.PeftConfigFile)));
        Assert.Equal("stories260K", doc.RootElement.GetProperty("base_model_name_or_path").GetString());
    }
}
