// Typed reads of optional JSON fields for the config, adapter and data readers; a present field of the wrong type is
// an error naming the file and field.
using System.Text.Json;

namespace VkPeft.Peft.Formats;

public static class JsonFields
{
    public static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public static bool? Bool(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    public static double? Dbl(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;

    public static int? Int(string file, JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
            throw new ModelFormatException(file, name, $"expected an integer, got {v.GetRawText()}");
        return i;
    }

    /// <summary>An enum field by name (case-insensitive), <paramref name="fallback"/> when absent; an unknown value names the file and field.</summary>
    public static T ParseEnum<T>(string file, JsonElement e, string name, T fallback) where T : struct, Enum
    {
        string? s = Str(e, name);
        if (s is null) return fallback;
        return Enum.TryParse<T>(s, ignoreCase: true, out var v) ? v
            : throw new ModelFormatException(file, name, $"unknown value '{s}' (known: {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))})");
    }
}
