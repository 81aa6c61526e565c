// HF PEFT prompt-tuning folders: adapter_config.json with peft_type "PROMPT_TUNING" and PromptTuningConfig's fields as
// PEFT's save_pretrained writes them (num_virtual_tokens, token_dim = hidden size, num_layers, num_attention_heads,
// num_transformer_submodules 1 for a causal LM, prompt_tuning_init RANDOM | SAMPLE_VOCAB | TEXT and its text), and
// adapter_model.safetensors with the one un-prefixed tensor prompt_embeddings [n, dim]. Reading checks the model-derived
// fields against the base, naming the file and field.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prompt;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    private static ExportReport SavePeftPrompt(string dir, AdapterWeights adapter, LlamaConfig baseConfig, bool force, string dtype)
    {
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var t = adapter.Tensors[PromptMethod.TensorName];
        var entries = new List<SafeTensorsWriter.Entry> { SafeTensorsWriter.FromFloat32(PromptMethod.TensorName, t.Shape, t.Data, dtype) };
        return WritePeftFolder(dir, force, dtype, PeftPromptConfigJson(adapter.Config, baseConfig), entries, PeftMetadata(adapter.Config, baseConfig));
    }

    private static string PeftPromptInit(PromptInit init) => init switch
    {
        PromptInit.Vocab => "SAMPLE_VOCAB",
        PromptInit.Text => "TEXT",
        _ => "RANDOM",
    };

    /// <summary>PromptTuningConfig's fields only, sorted as <c>save_pretrained</c> writes them.</summary>
    private static byte[] PeftPromptConfigJson(AdapterConfig cfg, LlamaConfig c)
    {
        var s = PromptMethod.Settings(cfg);
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNull("auto_mapping");
            w.WriteString("base_model_name_or_path", PeftBaseModelName(cfg.BaseModel));
            w.WriteBoolean("inference_mode", true);
            w.WriteNull("modules_to_save");
            w.WriteNumber("num_attention_heads", c.NHeads);
            w.WriteNumber("num_layers", c.NLayers);
            w.WriteNumber("num_transformer_submodules", 1);
            w.WriteNumber("num_virtual_tokens", s.VirtualTokens);
            w.WriteString("peft_type", "PROMPT_TUNING");
            w.WriteString("prompt_tuning_init", PeftPromptInit(s.Init));
            if (s.InitText != null) w.WriteString("prompt_tuning_init_text", s.InitText);
            else w.WriteNull("prompt_tuning_init_text");
            w.WriteNull("revision");
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteNumber("token_dim", c.Dim);
            w.WriteNull("tokenizer_kwargs");
            w.WriteNull("tokenizer_name_or_path");
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>A model-derived field of a prompt-learning config: absent is accepted, a value must equal the base's.</summary>
    private static void RequireModelField(string cfgPath, JsonElement r, string field, int expected, string what)
    {
        if (Int(cfgPath, r, field) is { } v && v != expected)
            throw new ModelFormatException(cfgPath, field, $"is {v}, but the base model has {expected} {what}");
    }

    private static AdapterWeights LoadPeftPrompt(string dir, string cfgPath, JsonElement r, LlamaConfig baseConfig)
    {
        RequireModelField(cfgPath, r, "token_dim", baseConfig.Dim, "hidden size");
        RequireModelField(cfgPath, r, "num_layers", baseConfig.NLayers, "layers");
        RequireModelField(cfgPath, r, "num_attention_heads", baseConfig.NHeads, "attention heads");
        RequireModelField(cfgPath, r, "num_transformer_submodules", 1, "transformer submodules (a causal LM)");
        if (r.TryGetProperty("modules_to_save", out var ms) && ms.ValueKind == JsonValueKind.Array && ms.GetArrayLength() > 0)
            throw new ModelFormatException(cfgPath, "modules_to_save", "fully trained extra modules are not supported");
        int n = Int(cfgPath, r, "num_virtual_tokens") ?? throw new ModelFormatException(cfgPath, "num_virtual_tokens", "required field is missing");
        var init = Str(r, "prompt_tuning_init") switch
        {
            "SAMPLE_VOCAB" => PromptInit.Vocab,
            "TEXT" => PromptInit.Text,
            _ => PromptInit.Random,
        };
        var method = PeftMethods.Get("prompt");
        string wPath = WeightsPath(dir);
        using var file = SafeTensorsFile.Open(wPath);
        var config = new AdapterConfig
        {
            Method = method,
            Targets = [],
            BaseQuant = ReadPeftBaseQuant(cfgPath, r, file),
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
            Settings = new PromptSettings(n, init, Str(r, "prompt_tuning_init_text")),
        };
        method.ValidateConfig(config, baseConfig, cfgPath);
        var adapter = new AdapterWeights(config);
        var spec = method.Parameters(baseConfig, config).Single();
        adapter.Tensors[spec.Name] = new HostTensor(ReadShaped(file, PromptMethod.TensorName, spec.Shape), spec.Shape);
        foreach (var name in file.Tensors.Keys)
            if (name != PromptMethod.TensorName)
                throw new ModelFormatException(wPath, name, $"unexpected tensor (a prompt-tuning adapter holds only {PromptMethod.TensorName})");
        AdapterMerge.Validate(adapter, baseConfig, wPath);
        return adapter;
    }
}
