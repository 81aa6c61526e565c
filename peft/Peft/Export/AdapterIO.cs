// Adapter folders: HF PEFT LoRA (adapter_config.json + adapter_model.safetensors, PEFT keys, q/k rows of B in
// rotate-half order) and vkpeft's own format (vkpeft_adapter.json, canonical names) for LoRA, QA-LoRA and bottleneck.
using System.Globalization;
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static class AdapterIO
{
    public const string PeftConfigFile = "adapter_config.json";
    public const string VkPeftConfigFile = "vkpeft_adapter.json";
    public const string WeightsFile = "adapter_model.safetensors";
    public const int FormatVersion = 1;

    /// <summary>PEFT key of a LoRA matrix: <c>base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight</c> (part "A" or "B").</summary>
    public static string PeftKey(int layer, TargetModule t, string part) =>
        $"base_model.model.model.layers.{layer}.{AdapterConfig.HfPath(t)}.lora_{part}.weight";

    private static string MethodName(PeftMethod m) => m switch
    {
        PeftMethod.Lora => "lora",
        PeftMethod.QaLora => "qa-lora",
        _ => "adapter",
    };

    private static string LayoutName(RopeLayout l) => l == RopeLayout.InterleavedPairs ? "interleaved_pairs" : "rotate_half";

    // ---------------------------------------------------------------- PEFT

    /// <summary>
    /// Writes a PEFT LoRA adapter folder. B rows of q/k are converted from the base's layout to rotate-half (HF
    /// layout: within each head of size d, HF row c·d/2+i = interleaved row 2i+c). QA-LoRA is written in PEFT's
    /// <c>use_qalora</c> form, whose forward is <c>s·B·A_p·(L·mean_g(x))</c> with L = in/g groups while ours is
    /// <c>s·B·A·mean_g(x)</c>; so <c>A_p = A/L</c>, which is exact in float32 only when every target's L is a power of
    /// two. Otherwise the write is refused (use the vkpeft format, or merge). PEFT applies use_qalora to GPTQ bases only.
    /// Bottleneck adapters have no PEFT LoRA form.
    /// </summary>
    public static ExportReport SavePeft(string dir, AdapterWeights adapter, LlamaConfig baseConfig, bool force = false, string dtype = "F32")
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(baseConfig);
        var cfg = adapter.Config;
        if (cfg.Method == PeftMethod.Adapter)
            throw new ExportException("PEFT LoRA folders cannot hold a bottleneck adapter; use the vkpeft adapter format");
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var entries = new List<SafeTensorsWriter.Entry>();
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains))
            {
                var a = adapter.Tensors[AdapterWeights.LoraA(l, t)];
                var b = adapter.Tensors[AdapterWeights.LoraB(l, t)];
                float[] aData = a.Data;
                if (cfg.Method == PeftMethod.QaLora)
                {
                    int groups = (int)a.Shape[1];
                    if (!int.IsPow2(groups))
                        throw new ExportException($"QA-LoRA cannot be written exactly in PEFT's use_qalora form: {AdapterConfig.HfName(t)} has " +
                            $"L = in/g = {groups} groups, and PEFT scales the group mean by L, so A would have to be divided by {groups}, which is " +
                            "not exact in float32; use the vkpeft adapter format");
                    float inv = 1f / groups;
                    aData = a.Data.Select(v => v * inv).ToArray();
                }
                float[] bData = b.Data;
                if (ModelTensors.PermutedHeads(baseConfig, t) is { } heads)
                    bData = QkPermutation.PermuteRows<float>(b.Data, heads, baseConfig.HeadDim, cfg.Rank, baseConfig.RopeLayout, RopeLayout.RotateHalf);
                entries.Add(SafeTensorsWriter.FromFloat32(PeftKey(l, t, "A"), a.Shape, aData, dtype));
                entries.Add(SafeTensorsWriter.FromFloat32(PeftKey(l, t, "B"), b.Shape, bData, dtype));
            }

        var report = new ExportReport { OutPath = Path.GetFullPath(dir), Format = ExportFormat.Peft, DType = dtype };
        AtomicOutput.WriteDirectory(dir, force, tmp =>
        {
            File.WriteAllBytes(Path.Combine(tmp, PeftConfigFile), PeftConfigJson(cfg, baseConfig));
            SafeTensorsWriter.Write(Path.Combine(tmp, WeightsFile), entries);
        });
        foreach (var e in entries) report.Tensors.Add(new ExportedTensor(e.Name, e.DType, e.Shape, e.Data.LongLength));
        report.Files.AddRange([PeftConfigFile, WeightsFile]);
        return report;
    }

    private static byte[] PeftConfigJson(AdapterConfig cfg, LlamaConfig baseConfig)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("alpha_pattern");
            w.WriteEndObject();
            w.WriteString("base_model_name_or_path", cfg.BaseModel);
            w.WriteString("bias", "none");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("init_lora_weights", true);
            w.WriteNull("layers_pattern");
            w.WriteNull("layers_to_transform");
            w.WriteNumber("lora_alpha", cfg.Alpha);
            w.WriteNumber("lora_dropout", cfg.Dropout);
            w.WriteNull("modules_to_save");
            w.WriteString("peft_type", "LORA");
            w.WriteNumber("r", cfg.Rank);
            w.WriteStartObject("rank_pattern");
            w.WriteEndObject();
            w.WriteNull("revision");
            w.WriteStartArray("target_modules");
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
            w.WriteEndArray();
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteBoolean("use_dora", false);
            w.WriteBoolean("use_rslora", cfg.UseRsLora);
            if (cfg.Method == PeftMethod.QaLora)
            {
                w.WriteBoolean("use_qalora", true);
                w.WriteNumber("qalora_group_size", cfg.GroupSize);
            }
            w.WriteStartObject("vkpeft");
            w.WriteNumber("format_version", FormatVersion);
            w.WriteString("method", MethodName(cfg.Method));
            w.WriteStartObject("base_quantization");
            w.WriteString("type", cfg.BaseQuant.Type);
            w.WriteNumber("blocksize", cfg.BaseQuant.Blocksize);
            w.WriteEndObject();
            w.WriteString("base_rope_layout", LayoutName(baseConfig.RopeLayout));
            w.WriteString("qk_rows", "rotate_half");
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static AdapterWeights LoadPeft(string dir, LlamaConfig baseConfig)
    {
        string cfgPath = Path.Combine(dir, PeftConfigFile);
        using var doc = ParseJson(cfgPath);
        var r = doc.RootElement;
        string peftType = Str(r, "peft_type") ?? throw new ModelFormatException(cfgPath, "peft_type", "required field is missing");
        if (peftType != "LORA") throw new ModelFormatException(cfgPath, "peft_type", $"'{peftType}' is not supported (only LORA)");
        if (Bool(r, "use_dora") == true) throw new ModelFormatException(cfgPath, "use_dora", "DoRA adapters are not supported");
        if (Bool(r, "fan_in_fan_out") == true) throw new ModelFormatException(cfgPath, "fan_in_fan_out", "must be false for Llama");
        string bias = Str(r, "bias") ?? "none";
        if (bias != "none") throw new ModelFormatException(cfgPath, "bias", $"'{bias}' is not supported (only \"none\")");
        if (r.TryGetProperty("rank_pattern", out var rp) && rp.ValueKind == JsonValueKind.Object && rp.EnumerateObject().Any())
            throw new ModelFormatException(cfgPath, "rank_pattern", "per-module ranks are not supported");
        if (r.TryGetProperty("alpha_pattern", out var ap) && ap.ValueKind == JsonValueKind.Object && ap.EnumerateObject().Any())
            throw new ModelFormatException(cfgPath, "alpha_pattern", "per-module alphas are not supported");
        int rank = Int(cfgPath, r, "r") ?? 8;
        var targets = ParseHfTargets(cfgPath, r);
        bool qalora = Bool(r, "use_qalora") == true;
        var baseQuant = new BaseQuantization("none", 64);
        if (r.TryGetProperty("vkpeft", out var vk) && vk.ValueKind == JsonValueKind.Object)
            baseQuant = ReadBaseQuant(cfgPath, vk, "vkpeft.base_quantization") ?? baseQuant;
        var config = new AdapterConfig
        {
            Method = qalora ? PeftMethod.QaLora : PeftMethod.Lora,
            Rank = rank,
            Alpha = (float)(Dbl(r, "lora_alpha") ?? 8),
            Dropout = (float)(Dbl(r, "lora_dropout") ?? 0),
            UseRsLora = Bool(r, "use_rslora") ?? false,
            Targets = targets,
            GroupSize = qalora ? Int(cfgPath, r, "qalora_group_size") ?? 16 : 32,
            BaseQuant = baseQuant,
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };

        string wPath = WeightsPath(dir);
        var adapter = new AdapterWeights(config);
        using var file = SafeTensorsFile.Open(wPath);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in targets)
            {
                var (outF, inF) = ModelTensors.Shape(baseConfig, t);
                if (qalora && (config.GroupSize <= 0 || inF % config.GroupSize != 0))
                    throw new ModelFormatException(cfgPath, "qalora_group_size", $"{config.GroupSize} does not divide in_features {inF} of {AdapterConfig.HfName(t)}");
                int aCols = qalora ? inF / config.GroupSize : inF;
                string ka = PeftKey(l, t, "A"), kb = PeftKey(l, t, "B");
                float[] a = ReadShaped(file, ka, [rank, aCols]);
                float[] b = ReadShaped(file, kb, [outF, rank]);
                seen.Add(ka);
                seen.Add(kb);
                if (qalora) a = a.Select(v => v * aCols).ToArray();
                if (ModelTensors.PermutedHeads(baseConfig, t) is { } heads)
                    b = QkPermutation.PermuteRows<float>(b, heads, baseConfig.HeadDim, rank, RopeLayout.RotateHalf, baseConfig.RopeLayout);
                adapter.Tensors[AdapterWeights.LoraA(l, t)] = new HostTensor(a, [rank, aCols]);
                adapter.Tensors[AdapterWeights.LoraB(l, t)] = new HostTensor(b, [outF, rank]);
            }
        foreach (var name in file.Tensors.Keys)
            if (!seen.Contains(name))
                throw new ModelFormatException(wPath, name,
                    $"unexpected tensor (the base model has {baseConfig.NLayers} layers and the config targets {string.Join(", ", targets.Select(AdapterConfig.HfName))}; " +
                    "only lora_A/lora_B weights are supported)");
        AdapterMerge.Validate(adapter, baseConfig, wPath);
        return adapter;
    }

    private static TargetModule[] ParseHfTargets(string cfgPath, JsonElement r)
    {
        if (!r.TryGetProperty("target_modules", out var tm) || tm.ValueKind == JsonValueKind.Null)
            return [TargetModule.Q, TargetModule.V];
        if (tm.ValueKind == JsonValueKind.String)
        {
            if (tm.GetString() == "all-linear") return ModelTensors.LinearKinds;
            throw new ModelFormatException(cfgPath, "target_modules", $"regex target '{tm.GetString()}' is not supported; list module names");
        }
        if (tm.ValueKind != JsonValueKind.Array) throw new ModelFormatException(cfgPath, "target_modules", "must be a list of module names");
        var list = new List<TargetModule>();
        foreach (var e in tm.EnumerateArray())
        {
            string name = RequireString(cfgPath, "target_modules", e);
            var t = ModelTensors.LinearKinds.Where(k => AdapterConfig.HfName(k) == name).Cast<TargetModule?>().FirstOrDefault()
                ?? throw new ModelFormatException(cfgPath, "target_modules", $"unknown target '{name}' (supported: {string.Join(", ", ModelTensors.LinearKinds.Select(AdapterConfig.HfName))})");
            if (!list.Contains(t)) list.Add(t);
        }
        if (list.Count == 0) throw new ModelFormatException(cfgPath, "target_modules", "empty list");
        return [.. list];
    }

    // ---------------------------------------------------------------- vkpeft

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
            w.WriteString("method", MethodName(cfg.Method));
            w.WriteNumber("r", cfg.Rank);
            w.WriteNumber("lora_alpha", cfg.Alpha);
            w.WriteNumber("lora_dropout", cfg.Dropout);
            w.WriteBoolean("use_rslora", cfg.UseRsLora);
            w.WriteStartArray("target_modules");
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
            w.WriteEndArray();
            w.WriteNumber("group_size", cfg.GroupSize);
            w.WriteString("bottleneck_kind", cfg.BottleneckKind.ToString().ToLowerInvariant());
            w.WriteNumber("bottleneck", cfg.Bottleneck);
            w.WriteString("activation", cfg.Activation.ToString().ToLowerInvariant());
            w.WriteNumber("adapter_scale", cfg.AdapterScale);
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
        var method = (Str(r, "method") ?? throw new ModelFormatException(cfgPath, "method", "required field is missing")) switch
        {
            "lora" => PeftMethod.Lora,
            "qa-lora" => PeftMethod.QaLora,
            "adapter" => PeftMethod.Adapter,
            var m => throw new ModelFormatException(cfgPath, "method", $"unknown method '{m}' (lora, qa-lora, adapter)"),
        };
        var config = new AdapterConfig
        {
            Method = method,
            Rank = Int(cfgPath, r, "r") ?? 8,
            Alpha = (float)(Dbl(r, "lora_alpha") ?? 16),
            Dropout = (float)(Dbl(r, "lora_dropout") ?? 0),
            UseRsLora = Bool(r, "use_rslora") ?? false,
            Targets = method == PeftMethod.Adapter && !r.TryGetProperty("target_modules", out _) ? [] : ParseHfTargets(cfgPath, r),
            GroupSize = Int(cfgPath, r, "group_size") ?? 32,
            BottleneckKind = ParseEnum<BottleneckKind>(cfgPath, r, "bottleneck_kind", BottleneckKind.Houlsby),
            Bottleneck = Int(cfgPath, r, "bottleneck") ?? 16,
            Activation = ParseEnum<BottleneckActivation>(cfgPath, r, "activation", BottleneckActivation.Silu),
            AdapterScale = (float)(Dbl(r, "adapter_scale") ?? 4),
            BaseQuant = ReadBaseQuant(cfgPath, r, "base_quantization") ?? throw new ModelFormatException(cfgPath, "base_quantization", "required field is missing"),
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };
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
            foreach (var t in config.Targets)
                if (ModelTensors.PermutedHeads(baseConfig, t) is { } heads)
                    for (int l = 0; l < baseConfig.NLayers; l++)
                    {
                        var bt = adapter.Tensors[AdapterWeights.LoraB(l, t)];
                        adapter.Tensors[AdapterWeights.LoraB(l, t)] = bt with
                        {
                            Data = QkPermutation.PermuteRows<float>(bt.Data, heads, baseConfig.HeadDim, config.Rank, layout, baseConfig.RopeLayout),
                        };
                    }
        return adapter;
    }

    // ---------------------------------------------------------------- detection

    /// <summary>
    /// Loads an adapter folder in the vkpeft format (vkpeft_adapter.json) or the PEFT format (adapter_config.json),
    /// converts q/k rows of B to the base's RoPE layout and validates targets, layer count and every shape against
    /// <paramref name="baseConfig"/>. Errors name the file and the field or tensor.
    /// </summary>
    public static AdapterWeights Load(string dir, LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(dir);
        ArgumentNullException.ThrowIfNull(baseConfig);
        if (File.Exists(dir) && Path.GetFileName(dir) is PeftConfigFile or VkPeftConfigFile or WeightsFile) dir = Path.GetDirectoryName(Path.GetFullPath(dir))!;
        if (!Directory.Exists(dir)) throw new FileNotFoundException($"adapter folder not found: {dir}", dir);
        if (File.Exists(Path.Combine(dir, VkPeftConfigFile))) return LoadVkPeft(dir, baseConfig);
        if (File.Exists(Path.Combine(dir, PeftConfigFile))) return LoadPeft(dir, baseConfig);
        throw new ModelFormatException(dir, PeftConfigFile, $"the folder has neither {VkPeftConfigFile} (vkpeft) nor {PeftConfigFile} (PEFT)");
    }

    // ---------------------------------------------------------------- helpers

    private static string WeightsPath(string dir)
    {
        string p = Path.Combine(dir, WeightsFile);
        if (!File.Exists(p)) throw new ModelFormatException(p, WeightsFile, "adapter weights file is missing");
        return p;
    }

    private static float[] ReadShaped(SafeTensorsFile file, string name, long[] shape)
    {
        var info = file.Info(name);
        if (!info.Shape.SequenceEqual(shape))
            throw new ModelFormatException(file.Path, name, $"shape [{string.Join(", ", info.Shape)}] does not match the base model, which needs [{string.Join(", ", shape)}]");
        return file.ReadFloat32(name);
    }

    private static BaseQuantization? ReadBaseQuant(string file, JsonElement parent, string field)
    {
        string leaf = field[(field.LastIndexOf('.') + 1)..];
        if (!parent.TryGetProperty(leaf, out var q) || q.ValueKind != JsonValueKind.Object) return null;
        string type = Str(q, "type") ?? throw new ModelFormatException(file, field + ".type", "required field is missing");
        if (!BaseQuantization.Types.Contains(type))
            throw new ModelFormatException(file, field + ".type", $"unknown base quantization '{type}' (known: {string.Join(", ", BaseQuantization.Types)})");
        return new BaseQuantization(type, Int(file, q, "blocksize") ?? 64);
    }

    private static T ParseEnum<T>(string file, JsonElement e, string name, T fallback) where T : struct, Enum
    {
        string? s = Str(e, name);
        if (s is null) return fallback;
        return Enum.TryParse<T>(s, ignoreCase: true, out var v) ? v
            : throw new ModelFormatException(file, name, $"unknown value '{s}' (known: {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))})");
    }

    private static JsonDocument ParseJson(string path)
    {
        var doc = JsonFields.ParseFile(path);
        if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
        doc.Dispose();
        throw new ModelFormatException(path, "json", "an adapter configuration must be a JSON object");
    }
}
