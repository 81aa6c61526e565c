// Strict JSON file parsing and typed reads of JSON fields for the config, tokenizer, adapter, checkpoint and data
// readers: invalid UTF-8, malformed JSON and a present field of the wrong type are errors naming the file and field.
using System.Text.Json;

namespace VkPeft.Peft.Formats;

public static class JsonFields
{
    /// <summary>Largest JSON file read whole (config, tokenizer, adapter and checkpoint state files).</summary>
    public const long MaxJsonFileBytes = 1L << 30;

    /// <summary>Reads and parses a whole JSON file; errors name the file (and the byte or line at fault).</summary>
    public static JsonDocument ParseFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"file not found: {path}", path);
        long length = new FileInfo(path).Length;
        if (length > MaxJsonFileBytes)
            throw new ModelFormatException(path, "json", $"{length} bytes is larger than the {MaxJsonFileBytes}-byte limit for a JSON file");
        return Parse(path, "json", File.ReadAllBytes(path));
    }

    /// <summary>Parses UTF-8 JSON bytes that came from <paramref name="file"/> (<paramref name="field"/> names the part).</summary>
    public static JsonDocument Parse(string file, string field, ReadOnlySpan<byte> utf8)
    {
        RequireUtf8(file, field, utf8);
        try
        {
            return JsonDocument.Parse(utf8.ToArray(), new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(file, field, $"not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}): {FirstLine(e.Message)}", e);
        }
    }

    /// <summary>Throws naming the first invalid byte when <paramref name="bytes"/> is not valid UTF-8.</summary>
    public static void RequireUtf8(string file, string field, ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return;
        int at = 0;
        var status = System.Text.Unicode.Utf8.ToUtf16(bytes, new char[bytes.Length], out at, out _, replaceInvalidSequences: false);
        throw new ModelFormatException(file, field, $"invalid UTF-8 at byte {at} ({status})");
    }

    private static string FirstLine(string s)
    {
        int nl = s.IndexOfAny(['\r', '\n']);
        return nl < 0 ? s : s[..nl];
    }

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
            throw new ModelFormatException(file, name, $"expected an integer, got {Shorten(v.GetRawText())}");
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

    /// <summary>A required string element (array item or property value); otherwise an error naming the field.</summary>
    public static string RequireString(string file, string field, JsonElement v) =>
        v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new ModelFormatException(file, field, $"expected a string, got {Shorten(v.GetRawText())}");

    /// <summary>A required 32-bit integer element; otherwise an error naming the field.</summary>
    public static int RequireInt(string file, string field, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i
            : throw new ModelFormatException(file, field, $"expected an integer, got {Shorten(v.GetRawText())}");

    /// <summary>A required finite number element; otherwise an error naming the field.</summary>
    public static double RequireNumber(string file, string field, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) ? d
            : throw new ModelFormatException(file, field, $"expected a finite number, got {Shorten(v.GetRawText())}");

    /// <summary>JSON text for a message: one line, at most 60 characters.</summary>
    public static string Shorten(string raw)
    {
        string one = raw.ReplaceLineEndings(" ");
        return one.Length <= 60 ? one : one[..57] + "...";
    }
}
