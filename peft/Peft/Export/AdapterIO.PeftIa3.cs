// HF PEFT (IA)³ adapter folders: adapter_config.json with peft_type "IA3", target_modules and feedforward_modules as
// PEFT writes them, and adapter_model.safetensors with one `…{module}.ia3_l` per layer and target ([out, 1] for
// output scaling, [1, in] for feed-forward input scaling); k/q vectors in rotate-half row order, like LoRA's B.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    /// <summary>PEFT key of an (IA)³ vector: <c>base_model.model.model.layers.{i}.self_attn.k_proj.ia3_l</c>.</summary>
    public static string PeftIa3Key(int layer, TargetModule t) => $"base_model.model.model.layers.{layer}.{AdapterConfig.HfPath(t)}.ia3_l";

    /// <summary>A vector's values with q/k rows moved between RoPE layouts (feed-forward vectors scale inputs: unchanged).</summary>
    private static float[] Ia3Rows(float[] data, LlamaConfig c, AdapterConfig a, TargetModule t, RopeLayout from, RopeLayout to) =>
        !Ia3Method.ScalesInput(a, t) && ModelTensors.PermutedHeads(c, t) is { } heads
            ? QkPermutation.PermuteRows<float>(data, heads, c.HeadDim, 1, from, to) : data;

    private static ExportReport SavePeftIa3(string dir, AdapterWeights adapter, LlamaConfig baseConfig, bool force, string dtype)
    {
        var cfg = adapter.Config;
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var entries = new List<SafeTensorsWriter.Entry>();
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains))
            {
                var v = adapter.Tensors[Ia3Method.VectorName(l, t)];
                entries.Add(SafeTensorsWriter.FromFloat32(PeftIa3Key(l, t), v.Shape, Ia3Rows(v.Data, baseConfig, cfg, t, baseConfig.RopeLayout, RopeLayout.RotateHalf), dtype));
            }
        return WritePeftFolder(dir, force, dtype, PeftIa3ConfigJson(cfg), entries, PeftMetadata(cfg, baseConfig));
    }

    /// <summary>PEFT's IA3Config fields only, as <c>save_pretrained</c> writes them (vkpeft's metadata: the safetensors header).</summary>
    private static byte[] PeftIa3ConfigJson(AdapterConfig cfg)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNull("auto_mapping");
            w.WriteString("base_model_name_or_path", PeftBaseModelName(cfg.BaseModel));
            w.WriteNull("exclude_modules");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteStartArray("feedforward_modules");
            foreach (var t in ModelTensors.LinearKinds.Where(Ia3Method.Feedforward(cfg).Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
            w.WriteEndArray();
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("init_ia3_weights", true);
            w.WriteNull("modules_to_save");
            w.WriteString("peft_type", "IA3");
            w.WriteNull("revision");
            w.WriteStartArray("target_modules");
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
            w.WriteEndArray();
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static AdapterWeights LoadPeftIa3(string dir, string cfgPath, JsonElement r, LlamaConfig baseConfig)
    {
        if (Bool(r, "fan_in_fan_out") == true) throw new ModelFormatException(cfgPath, "fan_in_fan_out", "must be false for Llama");
        if (r.TryGetProperty("modules_to_save", out var ms) && ms.ValueKind == JsonValueKind.Array && ms.GetArrayLength() > 0)
            throw new ModelFormatException(cfgPath, "modules_to_save", "fully trained extra modules are not supported");
        var method = PeftMethods.Get("ia3");
        string wPath = WeightsPath(dir);
        using var file = SafeTensorsFile.Open(wPath);
        var baseQuant = ReadPeftBaseQuant(cfgPath, r, file);
        var common = new AdapterConfig
        {
            Method = method,
            Targets = r.TryGetProperty("target_modules", out var tm) && tm.ValueKind != JsonValueKind.Null ? ParseHfTargets(cfgPath, r) : method.TargetsWhenUnlisted,
            BaseQuant = baseQuant,
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };
        var config = method.ReadConfig(cfgPath, r, common);
        method.ValidateConfig(config, baseConfig, cfgPath);

        var adapter = new AdapterWeights(config);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in method.Parameters(baseConfig, config))
        {
            int layer = int.Parse(spec.Name.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture);
            var t = config.Targets.First(x => Ia3Method.VectorName(layer, x) == spec.Name);
            string key = PeftIa3Key(layer, t);
            var data = Ia3Rows(ReadShaped(file, key, spec.Shape), baseConfig, config, t, RopeLayout.RotateHalf, baseConfig.RopeLayout);
            seen.Add(key);
            adapter.Tensors[spec.Name] = new HostTensor(data, spec.Shape);
        }
        foreach (var name in file.Tensors.Keys)
            if (!seen.Contains(name))
                throw new ModelFormatException(wPath, name,
                    $"unexpected tensor (the base model has {baseConfig.NLayers} layers and the config targets {string.Join(", ", config.Targets.Select(AdapterConfig.HfName))}; " +
                    "only ia3_l vectors are supported)");
        AdapterMerge.Validate(adapter, baseConfig, wPath);
        return adapter;
    }
}
