// Adapter folders: the file names, format detection on load and shared helpers. Each on-disk format has its own file:
// AdapterIO.Peft.cs (HF PEFT LoRA folders) and AdapterIO.VkPeft.cs (vkpeft's own format, every method).
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    public const string PeftConfigFile = "adapter_config.json";
    public const string VkPeftConfigFile = "vkpeft_adapter.json";
    public const string WeightsFile = "adapter_model.safetensors";
    public const int FormatVersion = 1;

    /// <summary>PEFT key of a LoRA matrix: <c>base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight</c> (part "A" or "B").</summary>
    public static string PeftKey(int layer, TargetModule t, string part) =>
        $"base_model.model.model.layers.{layer}.{AdapterConfig.HfPath(t)}.lora_{part}.weight";

    /// <summary>PEFT key of a DoRA magnitude vector: <c>base_model.model.model.layers.{i}.self_attn.q_proj.lora_magnitude_vector</c> (saved without ".weight").</summary>
    public static string PeftMagnitudeKey(int layer, TargetModule t) =>
        $"base_model.model.model.layers.{layer}.{AdapterConfig.HfPath(t)}.lora_magnitude_vector";

    private static string LayoutName(RopeLayout l) => l == RopeLayout.InterleavedPairs ? "interleaved_pairs" : "rotate_half";

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

    private static BaseQuant? ReadBaseQuant(string file, JsonElement parent, string field)
    {
        string leaf = field[(field.LastIndexOf('.') + 1)..];
        if (!parent.TryGetProperty(leaf, out var q) || q.ValueKind != JsonValueKind.Object) return null;
        string type = Str(q, "type") ?? throw new ModelFormatException(file, field + ".type", "required field is missing");
        if (!BaseQuant.Types.Contains(type))
            throw new ModelFormatException(file, field + ".type", $"unknown base quantization '{type}' (known: {string.Join(", ", BaseQuant.Types)})");
        return new BaseQuant(type, Int(file, q, "blocksize") ?? 64);
    }

    private static JsonDocument ParseJson(string path)
    {
        var doc = JsonFields.ParseFile(path);
        if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
        doc.Dispose();
        throw new ModelFormatException(path, "json", "an adapter configuration must be a JSON object");
    }
}
