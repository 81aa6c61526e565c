// vkpeft's own adapter folders (vkpeft_adapter.json + adapter_model.safetensors with canonical names): the common
// fields, the method's own fields (PeftMethod.WriteConfig/ReadConfig), the base's RoPE layout and sizes.
using System.Globalization;
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    /// <summary>
    /// Writes the vkpeft adapter folder: vkpeft_adapter.json (method, every config field, base quantization, the base
    /// model's RoPE layout and sizes, format version) and adapter_model.safetensors with canonical tensor names, F32,
    /// q/k rows of B in the base's layout (recorded as rope_layout).
    /// </summary>
    public static ExportReport SaveVkPeft(string dir, AdapterWeights adapter, LlamaConfig baseConfig, bool force = false)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(baseConfig);
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var entries = adapter.Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => SafeTensorsWriter.FromFloat32(kv.Key, kv.Value.Shape, kv.Value.Data)).ToList();
        var report = new ExportReport { OutPath = Path.GetFullPath(dir), Format = ExportFormat.VkPeft, DType = "F32" };
        AtomicOutput.WriteDirectory(dir, force, tmp =>
        {
            File.WriteAllBytes(Path.Combine(tmp, VkPeftConfigFile), VkPeftConfigJson(adapter.Config, baseConfig));
            SafeTensorsWriter.Write(Path.Combine(tmp, WeightsFile), entries, new Dictionary<string, string> { ["vkpeft_format_version"] = FormatVersion.ToString(CultureInfo.InvariantCulture) });
        });
        foreach (var e in entries) report.Tensors.Add(new ExportedTensor(e.Name, e.DType, e.Shape, e.Data.LongLength));
        report.Files.AddRange([VkPeftConfigFile, WeightsFile]);
        return report;
    }

    private static byte[] VkPeftConfigJson(AdapterConfig cfg, LlamaConfig b)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", "vkpeft-adapter");
            w.WriteNumber("format_version", FormatVersion);
            w.WriteString("method", cfg.Method.Name);
            if (cfg.Targets.Length > 0)   // methods that adapt no linear (prompt-side methods) write none
            {
                w.WriteStartArray("target_modules");
                foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
                w.WriteEndArray();
            }
            cfg.Method.WriteConfig(w, cfg);
            w.WriteStartObject("base_quantization");
            w.WriteString("type", cfg.BaseQuant.Type);
            w.WriteNumber("blocksize", cfg.BaseQuant.Blocksize);
            w.WriteEndObject();
            w.WriteString("base_model_name_or_path", cfg.BaseModel);
            w.WriteString("rope_layout", LayoutName(b.RopeLayout));
            w.WriteStartObject("base");
            w.WriteNumber("n_layers", b.NLayers);
            w.WriteNumber("dim", b.Dim);
            w.WriteNumber("hidden_dim", b.HiddenDim);
            w.WriteNumber("n_heads", b.NHeads);
            w.WriteNumber("n_kv_heads", b.NKvHeads);
            w.WriteNumber("head_dim", b.HeadDim);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static AdapterWeights LoadVkPeft(string dir, LlamaConfig baseConfig)
    {
        string cfgPath = Path.Combine(dir, VkPeftConfigFile);
        using var doc = ParseJson(cfgPath);
        var r = doc.RootElement;
        int version = Int(cfgPath, r, "format_version") ?? throw new ModelFormatException(cfgPath, "format_version", "required field is missing");
        if (version != FormatVersion) throw new ModelFormatException(cfgPath, "format_version", $"version {version} is not supported (this build reads {FormatVersion})");
        string methodName = Str(r, "method") ?? throw new ModelFormatException(cfgPath, "method", "required field is missing");
        var method = PeftMethods.TryGet(methodName)
            ?? throw new ModelFormatException(cfgPath, "method", $"unknown method '{methodName}' ({string.Join(", ", PeftMethods.All.Select(m => m.Name))})");
        var common = new AdapterConfig
        {
            Method = method,
            // An empty list is valid only for a method that can adapt no linear (norm tuning).
            Targets = !r.TryGetProperty("target_modules", out var tm) ? method.TargetsWhenUnlisted
                : tm.ValueKind == JsonValueKind.Array && tm.GetArrayLength() == 0 && method.TargetsWhenUnlisted.Length == 0 ? []
                : ParseHfTargets(cfgPath, r),
            BaseQuant = ReadBaseQuant(cfgPath, r, "base_quantization") ?? throw new ModelFormatException(cfgPath, "base_quantization", "required field is missing"),
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };
        var config = method.ReadConfig(cfgPath, r, common);
        var layout = Str(r, "rope_layout") switch
        {
            "interleaved_pairs" => RopeLayout.InterleavedPairs,
            "rotate_half" => RopeLayout.RotateHalf,
            var s => throw new ModelFormatException(cfgPath, "rope_layout", $"'{s}' is not interleaved_pairs or rotate_half"),
        };
        if (r.TryGetProperty("base", out var b) && b.ValueKind == JsonValueKind.Object)
        {
            void Same(string field, int actual)
            {
                if (Int(cfgPath, b, field) is { } v && v != actual)
                    throw new ModelFormatException(cfgPath, "base." + field, $"the adapter was trained on a base with {field} {v}; this base has {actual}");
            }
            Same("n_layers", baseConfig.NLayers);
            Same("dim", baseConfig.Dim);
            Same("hidden_dim", baseConfig.HiddenDim);
            Same("n_heads", baseConfig.NHeads);
            Same("n_kv_heads", baseConfig.NKvHeads);
            Same("head_dim", baseConfig.HeadDim);
        }

        string wPath = WeightsPath(dir);
        var adapter = new AdapterWeights(config);
        using (var file = SafeTensorsFile.Open(wPath))
            foreach (var (name, info) in file.Tensors)
                adapter.Tensors[name] = new HostTensor(file.ReadFloat32(name), info.Shape);
        AdapterMerge.Validate(adapter, baseConfig, wPath);
        if (layout != baseConfig.RopeLayout)
            foreach (var spec in config.Method.Parameters(baseConfig, config))
                if (spec.OutputRowsOf is { } t && ModelTensors.PermutedHeads(baseConfig, t) is { } heads)
                {
                    var tensor = adapter.Tensors[spec.Name];
                    int rowLength = (int)(tensor.Count / tensor.Shape[0]);
                    adapter.Tensors[spec.Name] = tensor with
                    {
                        Data = QkPermutation.PermuteRows<float>(tensor.Data, heads, baseConfig.HeadDim, rowLength, layout, baseConfig.RopeLayout),
                    };
                }
        return adapter;
    }
}
