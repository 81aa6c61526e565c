// HF PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors): PEFT keys, q/k rows of B in
// rotate-half order, QA-LoRA in PEFT's use_qalora form; written and read for LoRA-family methods ((IA)³ folders:
// AdapterIO.PeftIa3.cs). adapter_config.json holds only PEFT's own fields; vkpeft's metadata (format version, method,
// base quantization, RoPE layouts) goes into the safetensors __metadata__ as vkpeft_* strings. Folders written with the
// older top-level "vkpeft" object in adapter_config.json still load.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Dora;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
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
        if (cfg.Method.PeftUnsupportedReason is { } why) throw new ExportException(why);
        if (cfg.Method is Ia3Method) return SavePeftIa3(dir, adapter, baseConfig, force, dtype);
        if (cfg.Method is Methods.Prompt.PromptMethod) return SavePeftPrompt(dir, adapter, baseConfig, force, dtype);
        if (cfg.Method is Methods.Prefix.PrefixMethod) return SavePeftPrefix(dir, adapter, baseConfig, force, dtype);
        if (cfg.Method is LlamaAdapterMethod) return SavePeftAdaptionPrompt(dir, adapter, baseConfig, force, dtype);
        bool qalora = cfg.Method is LoraMethod { GroupPooled: true };
        var lora = cfg.SettingsOf<LoraSettings>();
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        var entries = new List<SafeTensorsWriter.Entry>();
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains))
            {
                var a = adapter.Tensors[AdapterWeights.LoraA(l, t)];
                var b = adapter.Tensors[AdapterWeights.LoraB(l, t)];
                float[] aData = a.Data;
                if (qalora)
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
                    bData = QkPermutation.PermuteRows<float>(b.Data, heads, baseConfig.HeadDim, lora.Rank, baseConfig.RopeLayout, RopeLayout.RotateHalf);
                entries.Add(SafeTensorsWriter.FromFloat32(PeftKey(l, t, "A"), a.Shape, aData, dtype));
                entries.Add(SafeTensorsWriter.FromFloat32(PeftKey(l, t, "B"), b.Shape, bData, dtype));
                if (cfg.Method is DoraMethod)
                {
                    var m = adapter.Tensors[DoraMethod.MagnitudeName(l, t)];
                    float[] mData = ModelTensors.PermutedHeads(baseConfig, t) is { } mHeads
                        ? QkPermutation.PermuteRows<float>(m.Data, mHeads, baseConfig.HeadDim, 1, baseConfig.RopeLayout, RopeLayout.RotateHalf)
                        : m.Data;
                    entries.Add(SafeTensorsWriter.FromFloat32(PeftMagnitudeKey(l, t), m.Shape, mData, dtype));
                }
            }
        return WritePeftFolder(dir, force, dtype, PeftConfigJson(cfg), entries, PeftMetadata(cfg, baseConfig));
    }

    /// <summary>A PEFT folder (config + safetensors) written to a temporary folder and renamed into place.</summary>
    private static ExportReport WritePeftFolder(string dir, bool force, string dtype, byte[] configJson, List<SafeTensorsWriter.Entry> entries,
        IReadOnlyDictionary<string, string> metadata)
    {
        var report = new ExportReport { OutPath = Path.GetFullPath(dir), Format = ExportFormat.Peft, DType = dtype };
        AtomicOutput.WriteDirectory(dir, force, tmp =>
        {
            File.WriteAllBytes(Path.Combine(tmp, PeftConfigFile), configJson);
            SafeTensorsWriter.Write(Path.Combine(tmp, WeightsFile), entries, metadata);
        });
        foreach (var e in entries) report.Tensors.Add(new ExportedTensor(e.Name, e.DType, e.Shape, e.Data.LongLength));
        report.Files.AddRange([PeftConfigFile, WeightsFile]);
        return report;
    }

    private static byte[] PeftConfigJson(AdapterConfig cfg)
    {
        var lora = cfg.SettingsOf<LoraSettings>();
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("alpha_pattern");
            w.WriteEndObject();
            w.WriteString("base_model_name_or_path", PeftBaseModelName(cfg.BaseModel));
            w.WriteString("bias", "none");
            w.WriteBoolean("fan_in_fan_out", false);
            w.WriteBoolean("inference_mode", true);
            w.WriteBoolean("init_lora_weights", true);
            w.WriteNull("layers_pattern");
            w.WriteNull("layers_to_transform");
            w.WriteNumber("lora_alpha", lora.Alpha);
            w.WriteNumber("lora_dropout", lora.Dropout);
            w.WriteNull("modules_to_save");
            w.WriteString("peft_type", "LORA");
            w.WriteNumber("r", lora.Rank);
            w.WriteStartObject("rank_pattern");
            w.WriteEndObject();
            w.WriteNull("revision");
            w.WriteStartArray("target_modules");
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains)) w.WriteStringValue(AdapterConfig.HfName(t));
            w.WriteEndArray();
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteBoolean("use_dora", cfg.Method is DoraMethod);
            w.WriteBoolean("use_rslora", lora.UseRsLora);
            if (lora is QaLoraSettings qa)
            {
                w.WriteBoolean("use_qalora", true);
                w.WriteNumber("qalora_group_size", qa.GroupSize);
            }
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private const string MetaPrefix = "vkpeft_";

    /// <summary>vkpeft's metadata for a PEFT folder's safetensors __metadata__ (string values, PEFT ignores them).</summary>
    private static Dictionary<string, string> PeftMetadata(AdapterConfig cfg, LlamaConfig baseConfig) => new()
    {
        [MetaPrefix + "format_version"] = FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture),
        [MetaPrefix + "method"] = cfg.Method.Name,
        [MetaPrefix + "base_quantization"] = cfg.BaseQuant.Type,
        [MetaPrefix + "base_quantization_blocksize"] = cfg.BaseQuant.Blocksize.ToString(System.Globalization.CultureInfo.InvariantCulture),
        [MetaPrefix + "base_rope_layout"] = LayoutName(baseConfig.RopeLayout),
        [MetaPrefix + "qk_rows"] = "rotate_half",
    };

    /// <summary>
    /// The base quantization a PEFT folder records: from the safetensors __metadata__ (written by this version), else from
    /// the top-level "vkpeft" object of adapter_config.json (older folders), else none (folders PEFT itself writes).
    /// </summary>
    private static BaseQuant ReadPeftBaseQuant(string cfgPath, JsonElement r, SafeTensorsFile weights)
    {
        if (weights.Metadata.TryGetValue(MetaPrefix + "base_quantization", out var type))
        {
            string field = "__metadata__." + MetaPrefix + "base_quantization";
            if (!BaseQuant.Types.Contains(type))
                throw new ModelFormatException(weights.Path, field, $"unknown base quantization '{type}' (known: {string.Join(", ", BaseQuant.Types)})");
            int blocksize = 64;
            if (weights.Metadata.TryGetValue(MetaPrefix + "base_quantization_blocksize", out var bs) &&
                !int.TryParse(bs, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out blocksize))
                throw new ModelFormatException(weights.Path, field + "_blocksize", $"'{bs}' is not a whole number");
            return new BaseQuant(type, blocksize);
        }
        if (r.TryGetProperty("vkpeft", out var vk) && vk.ValueKind == JsonValueKind.Object)
            return ReadBaseQuant(cfgPath, vk, "vkpeft.base_quantization") ?? new BaseQuant("none", 64);
        return new BaseQuant("none", 64);
    }

    /// <summary>
    /// PEFT's base_model_name_or_path for a base given as <paramref name="baseModel"/> (a path or an id): the HF repo id
    /// when the base is an HF folder whose config.json names one in <c>_name_or_path</c>, else the folder's name, or the
    /// file stem of a single-file model; never a relative path. A value that is no path on disk (an id read back from a
    /// PEFT folder) is kept unless it names a model file.
    /// </summary>
    public static string PeftBaseModelName(string baseModel)
    {
        if (string.IsNullOrWhiteSpace(baseModel)) return "";
        string trimmed = baseModel.TrimEnd('/', '\\');
        if (Directory.Exists(trimmed))
        {
            string configPath = Path.Combine(trimmed, "config.json");
            if (File.Exists(configPath))
            {
                try
                {
                    using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
                    if (doc.RootElement.ValueKind == JsonValueKind.Object && Str(doc.RootElement, "_name_or_path") is { Length: > 0 } id &&
                        IsRepoId(id))
                        return id;
                }
                catch (JsonException) { /* an unreadable config.json names no repo: fall back to the folder name */ }
            }
            return Path.GetFileName(Path.GetFullPath(trimmed));
        }
        if (File.Exists(trimmed) || ModelFileExtensions.Contains(Path.GetExtension(trimmed), StringComparer.OrdinalIgnoreCase))
            return Path.GetFileNameWithoutExtension(trimmed);
        return IsRepoId(trimmed) ? trimmed : Path.GetFileName(trimmed);
    }

    private static readonly string[] ModelFileExtensions = [".bin", ".gguf", ".safetensors", ".pt", ".pth"];

    /// <summary>An HF repo id: <c>name</c> or <c>owner/name</c>, no path parts like ".", ".." or a root.</summary>
    private static bool IsRepoId(string s)
    {
        if (Path.IsPathRooted(s) || s.Contains('\\', StringComparison.Ordinal)) return false;
        var parts = s.Split('/');
        return parts.Length <= 2 && parts.All(p => p.Length > 0 && p != "." && p != ".." &&
            p.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' or '.'));
    }

    private static AdapterWeights LoadPeft(string dir, LlamaConfig baseConfig)
    {
        string cfgPath = Path.Combine(dir, PeftConfigFile);
        using var doc = ParseJson(cfgPath);
        var r = doc.RootElement;
        string peftType = Str(r, "peft_type") ?? throw new ModelFormatException(cfgPath, "peft_type", "required field is missing");
        if (peftType == "IA3") return LoadPeftIa3(dir, cfgPath, r, baseConfig);
        if (peftType == "PROMPT_TUNING") return LoadPeftPrompt(dir, cfgPath, r, baseConfig);
        if (peftType == "PREFIX_TUNING") return LoadPeftPrefix(dir, cfgPath, r, baseConfig);
        if (peftType == "ADAPTION_PROMPT") return LoadPeftAdaptionPrompt(dir, cfgPath, r, baseConfig);
        if (peftType != "LORA") throw new ModelFormatException(cfgPath, "peft_type", $"'{peftType}' is not supported (only LORA, IA3, PROMPT_TUNING, PREFIX_TUNING and ADAPTION_PROMPT)");
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
        bool dora = Bool(r, "use_dora") == true;
        if (dora && qalora) throw new ModelFormatException(cfgPath, "use_dora", "DoRA together with use_qalora is not supported");
        string wPath = WeightsPath(dir);
        using var file = SafeTensorsFile.Open(wPath);
        var baseQuant = ReadPeftBaseQuant(cfgPath, r, file);
        int groupSize = qalora ? Int(cfgPath, r, "qalora_group_size") ?? 16 : 0;
        var config = new AdapterConfig
        {
            Method = qalora ? PeftMethod.QaLora : dora ? PeftMethods.Get("dora") : PeftMethod.Lora,
            Settings = (qalora ? new QaLoraSettings { GroupSize = groupSize } : new LoraSettings()) with
            {
                Rank = rank,
                Alpha = (float)(Dbl(r, "lora_alpha") ?? 8),
                Dropout = (float)(Dbl(r, "lora_dropout") ?? 0),
                UseRsLora = Bool(r, "use_rslora") ?? false,
            },
            Targets = targets,
            BaseQuant = baseQuant,
            BaseModel = Str(r, "base_model_name_or_path") ?? "",
        };

        var adapter = new AdapterWeights(config);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in targets)
            {
                var (outF, inF) = baseConfig.LinearShape(t);
                if (qalora && (groupSize <= 0 || inF % groupSize != 0))
                    throw new ModelFormatException(cfgPath, "qalora_group_size", $"{groupSize} does not divide in_features {inF} of {AdapterConfig.HfName(t)}");
                int aCols = qalora ? inF / groupSize : inF;
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
                if (dora)
                {
                    // PEFT saves the magnitude without ".weight" (and re-adds it on load); older writers kept it.
                    string km = PeftMagnitudeKey(l, t);
                    if (!file.Tensors.ContainsKey(km) && file.Tensors.ContainsKey(km + ".weight")) km += ".weight";
                    float[] m = ReadShaped(file, km, [outF]);
                    seen.Add(km);
                    if (ModelTensors.PermutedHeads(baseConfig, t) is { } mHeads)
                        m = QkPermutation.PermuteRows<float>(m, mHeads, baseConfig.HeadDim, 1, RopeLayout.RotateHalf, baseConfig.RopeLayout);
                    adapter.Tensors[DoraMethod.MagnitudeName(l, t)] = new HostTensor(m, [outF]);
                }
            }
        foreach (var name in file.Tensors.Keys)
            if (!seen.Contains(name))
                throw new ModelFormatException(wPath, name,
                    $"unexpected tensor (the base model has {baseConfig.NLayers} layers and the config targets {string.Join(", ", targets.Select(AdapterConfig.HfName))}; " +
                    (dora ? "only lora_A/lora_B weights and lora_magnitude_vector are supported)" : "only lora_A/lora_B weights are supported)"));
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
}
