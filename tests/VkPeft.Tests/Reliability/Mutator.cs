// Seeded, structure-aware mutations of the files vkpeft reads: bit flips, truncation at structural boundaries, header
// integers set to extremes, inserted and duplicated bytes, invalid UTF-8, and JSON edits (wrong types, removed,
// duplicated and renamed fields, out-of-range numbers). Every mutation is described in one line for the failure report.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace VkPeft.Tests.Reliability;

/// <summary>Where a binary file keeps its integers, strings and boundaries (found by walking a valid file).</summary>
public sealed class FileStructure
{
    public List<(int Offset, int Width, string Name)> Ints { get; } = [];
    public List<(int Offset, int Length)> Strings { get; } = [];
    public SortedSet<int> Boundaries { get; } = [];

    /// <summary>A JSON region inside the binary (a safetensors header), mutated as JSON with its u64 length in front.</summary>
    public (int Offset, int Length)? Json { get; set; }

    /// <summary>Protobuf varints (tags, lengths, values): replaced by another varint, which may change the file's length.</summary>
    public List<(int Offset, int Length, string Name)> Varints { get; } = [];

    public void Int(int offset, int width, string name) => Ints.Add((offset, width, name));
}

/// <summary>How a file is mutated.</summary>
public enum FileKind { Binary, Json, Text, Jsonl }

public static class Mutator
{
    private static readonly ulong[] ExtremeInts = [0, ulong.MaxValue, 1UL << 31, 1UL << 63, uint.MaxValue, (1UL << 31) - 1, 1UL << 32, 1, 7];

    /// <summary>Mutates <paramref name="data"/> with one or two seeded edits; returns the new bytes and what was done.</summary>
    public static (byte[] Data, string What) Mutate(byte[] data, FileKind kind, FileStructure? structure, Random rng)
    {
        int edits = rng.Next(4) == 0 ? 2 : 1;
        var what = new List<string>();
        for (int i = 0; i < edits; i++)
        {
            var (d, w) = MutateOnce(data, kind, structure, rng);
            data = d;
            what.Add(w);
            structure = null;   // offsets are stale after the first edit: later edits are structure-blind
        }
        return (data, string.Join("; ", what));
    }

    private static (byte[], string) MutateOnce(byte[] data, FileKind kind, FileStructure? s, Random rng)
    {
        int choice = rng.Next(100);
        switch (kind)
        {
            case FileKind.Json when choice < 70:
                return JsonMutation(data, rng);
            case FileKind.Jsonl when choice < 50:
                return JsonlMutation(data, rng);
            case FileKind.Text or FileKind.Jsonl when choice >= 95:
                return (choice % 2 == 0 ? [] : " \n\t\n"u8.ToArray(), "empty or blank file");
            case FileKind.Binary when s?.Json is { } region && choice < 35:
                return HeaderJsonMutation(data, region, rng);
            case FileKind.Binary when s is not null && s.Ints.Count > 0 && choice < 60:
                {
                    var (off, width, name) = s.Ints[rng.Next(s.Ints.Count)];
                    ulong v = rng.Next(5) == 0 ? (ulong)data.Length + (ulong)rng.Next(-2, 3) : ExtremeInts[rng.Next(ExtremeInts.Length)];
                    var copy = (byte[])data.Clone();
                    if (width == 8) BinaryPrimitives.WriteUInt64LittleEndian(copy.AsSpan(off), v);
                    else BinaryPrimitives.WriteUInt32LittleEndian(copy.AsSpan(off), (uint)v);
                    return (copy, $"int {name}@{off} = {v}");
                }
            case FileKind.Binary when s is not null && s.Varints.Count > 0 && choice < 60:
                {
                    // Huge or zero lengths and values, and tags with another wire type or field number.
                    var (off, len, name) = s.Varints[rng.Next(s.Varints.Count)];
                    ulong v = name.EndsWith(".tag", StringComparison.Ordinal) && rng.Next(2) == 0 ? ReadVarint(data, off) ^ (ulong)rng.Next(1, 8)
                        : rng.Next(5) == 0 ? (ulong)data.Length + (ulong)rng.Next(-2, 3) : ExtremeInts[rng.Next(ExtremeInts.Length)];
                    var encoded = new List<byte>();
                    for (ulong x = v; ; x >>= 7)
                    {
                        if (x < 0x80) { encoded.Add((byte)x); break; }
                        encoded.Add((byte)(x | 0x80));
                    }
                    return ([.. data[..off], .. encoded, .. data[(off + len)..]], $"varint {name}@{off} = {v}");
                }
            case FileKind.Binary when s is not null && s.Boundaries.Count > 0 && choice < 75:
                {
                    int b = s.Boundaries.ElementAt(rng.Next(s.Boundaries.Count)) + rng.Next(-1, 2);
                    b = Math.Clamp(b, 0, data.Length);
                    return (data[..b], $"truncate at boundary {b}");
                }
            case FileKind.Binary when s is not null && s.Strings.Count > 0 && choice < 85:
                {
                    var (off, len) = s.Strings[rng.Next(s.Strings.Count)];
                    if (len == 0) break;
                    var copy = (byte[])data.Clone();
                    copy[off + rng.Next(len)] = InvalidUtf8Byte(rng);
                    return (copy, $"invalid UTF-8 in string @{off}");
                }
        }
        return GenericMutation(data, kind, rng);
    }

    private static ulong ReadVarint(byte[] data, int at)
    {
        ulong v = 0;
        for (int shift = 0; at < data.Length && shift < 64; shift += 7)
        {
            byte x = data[at++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) break;
        }
        return v;
    }

    private static byte InvalidUtf8Byte(Random rng) => (new byte[] { 0xFF, 0xC0, 0xC3, 0x80, 0xED, 0xF5 })[rng.Next(6)];

    private static (byte[], string) GenericMutation(byte[] data, FileKind kind, Random rng)
    {
        int op = rng.Next(6);
        // Headers matter most: three flips in four land in the first 4 KiB.
        int Pos() => data.Length == 0 ? 0 : rng.Next(4) > 0 ? rng.Next(Math.Min(data.Length, 4096)) : rng.Next(data.Length);
        switch (op)
        {
            case 0:
            case 1:
                {
                    if (data.Length == 0) return ([0xFF], "empty -> 0xFF");
                    var copy = (byte[])data.Clone();
                    int p = Pos();
                    int bit = rng.Next(8);
                    copy[p] ^= (byte)(1 << bit);
                    return (copy, $"bit flip @{p}.{bit}");
                }
            case 2:
                {
                    int p = data.Length == 0 ? 0 : rng.Next(data.Length);
                    return (data[..p], $"truncate at {p}");
                }
            case 3:
                {
                    int p = Pos();
                    var ins = new byte[rng.Next(1, 9)];
                    rng.NextBytes(ins);
                    return ([.. data[..p], .. ins, .. data[p..]], $"insert {ins.Length} bytes @{p}");
                }
            case 4:
                {
                    if (data.Length < 2) return (data, "no-op");
                    int a = rng.Next(data.Length), len = rng.Next(1, Math.Min(64, data.Length - a) + 1);
                    int at = rng.Next(data.Length);
                    return ([.. data[..at], .. data[a..(a + len)], .. data[at..]], $"duplicate {len} bytes from @{a} at @{at}");
                }
            default:
                {
                    var copy = (byte[])data.Clone();
                    int p = Pos();
                    if (copy.Length == 0) return ([0xC3], "invalid UTF-8 in empty file");
                    copy[p] = InvalidUtf8Byte(rng);
                    return (copy, $"invalid UTF-8 byte @{p}");
                }
        }
    }

    // ------------------------------------------------------------------ JSON

    private static readonly Func<Random, JsonNode?>[] WrongValues =
    [
        _ => JsonValue.Create("x"), _ => JsonValue.Create(-1), _ => JsonValue.Create(0), _ => JsonValue.Create(2147483648L),
        _ => JsonValue.Create(9223372036854775807L), _ => JsonValue.Create(ulong.MaxValue), _ => JsonValue.Create(1e308), _ => JsonValue.Create(-1e308),
        _ => JsonValue.Create(1.5), _ => JsonValue.Create(true), _ => null, _ => new JsonArray(), _ => new JsonObject(),
        _ => new JsonArray(1, 2), _ => JsonValue.Create(new string('a', 5000)), _ => JsonValue.Create(-2147483648L),
        r => new JsonArray(JsonValue.Create(r.Next(-3, 100)), JsonValue.Create(-5)),
    ];

    /// <summary>A structure-aware edit of a JSON document (or a generic one when it does not parse).</summary>
    public static (byte[], string) JsonMutation(byte[] data, Random rng)
    {
        JsonNode? root;
        var nodes = new List<(JsonNode? Parent, string? Key, int Index, string Path)>();
        try
        {
            root = JsonNode.Parse(data);
            if (root is null) return GenericMutation(data, FileKind.Binary, rng);
            Collect(root, null, null, -1, "$", nodes);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            // An earlier edit left text the node model cannot hold (invalid UTF-8, a duplicate key): edit bytes instead.
            return GenericMutation(data, FileKind.Binary, rng);
        }
        if (nodes.Count == 0) return GenericMutation(data, FileKind.Binary, rng);
        var (parent, key, index, path) = nodes[rng.Next(nodes.Count)];
        int op = rng.Next(10);
        string? duplicate = null;
        switch (op)
        {
            case < 5:
                {
                    var v = WrongValues[rng.Next(WrongValues.Length)](rng);
                    Set(parent!, key, index, v);
                    return (Serialize(root, null), $"json {path} = {Describe(v)}");
                }
            case 5:
                Remove(parent!, key, index);
                return (Serialize(root, null), $"json remove {path}");
            case 6 when key is not null:
                duplicate = key;
                return (Serialize(root, (parent!, key)), $"json duplicate {path}");
            case 7 when key is not null:
                {
                    var obj = (JsonObject)parent!;
                    var v = obj[key];
                    obj.Remove(key);
                    obj[key + "_"] = v;
                    return (Serialize(root, null), $"json rename {path}");
                }
            case 8:
                {
                    byte[] bytes = Serialize(root, null);
                    var quotes = Enumerable.Range(0, bytes.Length).Where(i => bytes[i] == (byte)'"').ToList();
                    if (quotes.Count == 0) break;
                    int q = quotes[rng.Next(quotes.Count)] + 1;
                    return ([.. bytes[..q], InvalidUtf8Byte(rng), .. bytes[q..]], $"json invalid UTF-8 in a string @{q}");
                }
        }
        _ = duplicate;
        return GenericMutation(data, FileKind.Binary, rng);
    }

    private static string Describe(JsonNode? v)
    {
        string s = v?.ToJsonString() ?? "null";
        return s.Length > 40 ? s[..40] + "..." : s;
    }

    private static void Collect(JsonNode? node, JsonNode? parent, string? key, int index, string path, List<(JsonNode?, string?, int, string)> into)
    {
        if (parent is not null) into.Add((parent, key, index, path));
        if (into.Count > 4000) return;
        switch (node)
        {
            case JsonObject o:
                foreach (var (k, v) in o.ToList()) Collect(v, o, k, -1, path + "." + k, into);
                break;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++) Collect(a[i], a, null, i, $"{path}[{i}]", into);
                break;
        }
    }

    private static void Set(JsonNode parent, string? key, int index, JsonNode? v)
    {
        if (parent is JsonObject o) o[key!] = v;
        else ((JsonArray)parent)[index] = v;
    }

    private static void Remove(JsonNode parent, string? key, int index)
    {
        if (parent is JsonObject o) o.Remove(key!);
        else ((JsonArray)parent).RemoveAt(index);
    }

    /// <summary>Writes the document; <paramref name="dup"/> writes that property twice (JsonObject cannot hold it twice).</summary>
    private static byte[] Serialize(JsonNode root, (JsonNode Parent, string Key)? dup)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { SkipValidation = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            Write(w, root, dup);
        return ms.ToArray();
    }

    private static void Write(Utf8JsonWriter w, JsonNode? n, (JsonNode Parent, string Key)? dup)
    {
        switch (n)
        {
            case null:
                w.WriteNullValue();
                break;
            case JsonObject o:
                w.WriteStartObject();
                foreach (var (k, v) in o)
                {
                    int times = dup is { } d && ReferenceEquals(d.Parent, o) && d.Key == k ? 2 : 1;
                    for (int t = 0; t < times; t++)
                    {
                        w.WritePropertyName(k);
                        Write(w, v, dup);
                    }
                }
                w.WriteEndObject();
                break;
            case JsonArray a:
                w.WriteStartArray();
                foreach (var v in a) Write(w, v, dup);
                w.WriteEndArray();
                break;
            default:
                n.WriteTo(w);
                break;
        }
    }

    /// <summary>A JSON edit of a safetensors header; the u64 length is updated (mostly) so the edit reaches validation.</summary>
    private static (byte[], string) HeaderJsonMutation(byte[] data, (int Offset, int Length) region, Random rng)
    {
        byte[] header = data[region.Offset..(region.Offset + region.Length)];
        var (mutated, what) = JsonMutation(header, rng);
        bool fixLength = rng.Next(5) > 0;
        byte[] lengthBytes = fixLength ? BitConverter.GetBytes((ulong)mutated.Length) : data[(region.Offset - 8)..region.Offset];
        return ([.. data[..(region.Offset - 8)], .. lengthBytes, .. mutated, .. data[(region.Offset + region.Length)..]],
            "header " + what + (fixLength ? "" : " (length kept)"));
    }

    // ------------------------------------------------------------------ text data

    private static readonly string[] BadJsonlLines =
    [
        """{"text": 5}""", """{"output": null}""", """[1, 2]""", "\"just a string\"", """{"instruction": 3, "output": "x"}""",
        """{"prompt": ["a"], "completion": "b"}""", """{"text": "unterminated""", "{}", "null", """{"text": {"nested": true}}""",
        """{"completion": 1e400}""", "{\"text\": \"a\u0000b\"}",
    ];

    private static (byte[], string) JsonlMutation(byte[] data, Random rng)
    {
        var lines = Encoding.UTF8.GetString(data).Split('\n').ToList();
        int at = rng.Next(lines.Count);
        if (rng.Next(3) == 0)
        {
            byte[] line = Encoding.UTF8.GetBytes(lines[at]);
            var (m, what) = JsonMutation(line, rng);
            lines[at] = Encoding.Latin1.GetString(m);
            byte[] joined = Encoding.Latin1.GetBytes(string.Join('\n', lines.Select((l, i) => i == at ? l : Encoding.Latin1.GetString(Encoding.UTF8.GetBytes(l)))));
            return (joined, $"line {at + 1}: {what}");
        }
        string bad = BadJsonlLines[rng.Next(BadJsonlLines.Length)];
        lines[at] = bad;
        return (Encoding.UTF8.GetBytes(string.Join('\n', lines)), $"line {at + 1} = {bad}");
    }
}
