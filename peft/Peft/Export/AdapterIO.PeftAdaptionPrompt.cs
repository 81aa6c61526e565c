// HF PEFT LLaMA-Adapter folders: adapter_config.json with peft_type "ADAPTION_PROMPT", target_modules "self_attn",
// adapter_len and adapter_layers as PEFT's AdaptionPromptConfig writes them, and adapter_model.safetensors with
// `base_model.model.model.layers.{i}.self_attn.adaption_prompt` [1, adapter_len, dim] and `….adaption_gate` [1] for
// the top adapter_layers layers. Prompts are inputs of the k/v projections, so no RoPE row layout applies to them.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    /// <summary>The attention module PEFT wraps in Llama and Mistral models (TRANSFORMERS_MODEL_CONFIG target_modules).</summary>
    private const string AdaptionPromptModule = "self_attn";

    /// <summary>PEFT key of an adaption prompt or gate: <c>base_model.model.model.layers.{i}.self_attn.adaption_prompt</c>.</summary>
    public static string PeftAdaptionKey(int layer, string part) => $"base_model.model.model.layers.{layer}.{AdaptionPromptModule}.{part}";

    /// <summary>The PEFT key of a canonical LLaMA-Adapter tensor name (layers.{i}.adaption_prompt / adaption_gate).</summary>
    private static string PeftAdaptionKey(string canonical)
    {
        var parts = canonical.Split('.');
        return PeftAdaptionKey(int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture), parts[2]);
    }

    private static ExportReport SavePeftAdaptionPrompt(string dir, AdapterWeights adapter, LlamaConfig baseConfig, bool force, string dtype)
    {
        var cfg = adapter.Config;
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var entries = cfg.Method.Parameters(baseConfig, cfg)
            .Select(spec => SafeTensorsWriter.FromFloat32(PeftAdaptionKey(spec.Name), spec.Shape, adapter.Tensors[spec.Name].Data, dtype))
            .ToList();
        return WritePeftFolder(dir, force, dtype, PeftAdaptionPromptConfigJson(cfg, baseConfig), entries, PeftMetadata(cfg, baseConfig));
    }

    /// <summary>PEFT's AdaptionPromptConfig fields only, as <c>save_pretrained</c> writes them (sorted keys).</summary>
    private static byte[] PeftAdaptionPromptConfigJson(AdapterConfig cfg, LlamaConfig baseConfig)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNumber("adapter_layers", LlamaAdapterMethod.AdaptedLayers(cfg, baseConfig.NLayers));
            w.WriteNumber("adapter_len", LlamaAdapterMethod.Settings(cfg).AdapterLen);
            w.WriteNull("auto_mapping");
            w.WriteString("base_model_name_or_path", PeftBaseModelName(cfg.BaseModel));
            w.WriteBoolean("inference_mode", true);
            w.WriteString("peft_type", "ADAPTION_PROMPT");
            w.WriteNull("revision");
            w.WriteString("target_modules", AdaptionPromptModule);
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static AdapterWeights LoadPeftAdaptionPrompt(string dir, string cfgPath, JsonElement r, LlamaConfig baseConfig)
    {
        if (r.TryGetProperty("target_modules", out var tm) && tm.ValueKind != JsonValueKind.Null
            && (tm.ValueKind != JsonValueKind.String || tm.GetString() != AdaptionPromptModule))
            throw new ModelFormatException(cfgPath, "target_modules", $"must be \"{AdaptionPromptModule}\" (the Llama attention module PEFT wraps)");
        if (!r.TryGetProperty("adapter_layers", out var al) || al.ValueKind == JsonValueKind.Null)
            throw new ModelFormatException(cfgPath, "adapter_layers", "required whole number is missing");
        var method = PeftMethods.Get("llama-adapter");
        string wPath = WeightsPath(dir);
        using var file = SafeTensorsFile.Open(wPath);
        var common = new AdapterConfig
        {
            Method = method,
            Targets = [],
            BaseQuant = ReadPeftBaseQuant(cfgPath, r, file),
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };
        var config = method.ReadConfig(cfgPath, r, common);
        method.ValidateConfig(config, baseConfig, cfgPath);

        var adapter = new AdapterWeights(config);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in method.Parameters(baseConfig, config))
        {
            string key = PeftAdaptionKey(spec.Name);
            seen.Add(key);
            adapter.Tensors[spec.Name] = new HostTensor(ReadShaped(file, key, spec.Shape), spec.Shape);
        }
        foreach (var name in file.Tensors.Keys)
            if (!seen.Contains(name))
                throw new ModelFormatException(wPath, name,
                    $"unexpected tensor (the base model has {baseConfig.NLayers} layers and the config adapts the top {LlamaAdapterMethod.AdaptedLayers(config, baseConfig.NLayers)}; " +
                    "only adaption_prompt and adaption_gate tensors are supported)");
        AdapterMerge.Validate(adapter, baseConfig, wPath);
        return adapter;
    }
}
