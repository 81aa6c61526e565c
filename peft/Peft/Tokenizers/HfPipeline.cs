// The stages of a Hugging Face tokenizer.json around its model: normalizers, pre-tokenizers and decoders, read from
// their JSON objects. A stage type vkpeft does not implement is an error naming the file and the JSON path of its
// "type", never a silent skip.
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using VkPeft.Peft.Formats;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Tokenizers;

/// <summary>A piece of text on its way to the model; <c>First</c> marks the piece that starts the input.</summary>
public readonly record struct TextPiece(string Text, bool First);

public interface ITextNormalizer
{
    string Normalize(string text);
}

public interface IPreTokenizer
{
    List<TextPiece> Split(List<TextPiece> pieces);
}

public interface ITokenDecoder
{
    List<string> Decode(List<string> tokens);
}

/// <summary>Reads the normalizer, pre_tokenizer and decoder objects of a tokenizer.json.</summary>
public static class HfPipeline
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    public static ITextNormalizer? Normalizer(string file, JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(file, e, path);
        return type switch
        {
            "Sequence" => new SequenceNormalizer(Items(file, e, "normalizers", path).Select(x => Normalizer(file, x.Element, x.Path)!).ToArray()),
            "Prepend" => new PrependNormalizer(Required(file, e, "prepend", path)),
            "Replace" => new ReplaceNormalizer(Pattern(file, e, path), Str(e, "content") ?? ""),
            "NFC" => new UnicodeNormalizer(NormalizationForm.FormC),
            "NFD" => new UnicodeNormalizer(NormalizationForm.FormD),
            "NFKC" => new UnicodeNormalizer(NormalizationForm.FormKC),
            "NFKD" => new UnicodeNormalizer(NormalizationForm.FormKD),
            "Lowercase" => new LowercaseNormalizer(),
            "Strip" => new StripNormalizer(Bool(e, "strip_left") ?? true, Bool(e, "strip_right") ?? true),
            "StripAccents" => new StripAccentsNormalizer(),
            _ => throw Unsupported(file, path, "normalizer", type),
        };
    }

    public static IPreTokenizer? PreTokenizer(string file, JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(file, e, path);
        return type switch
        {
            "Sequence" => new SequencePreTokenizer(Items(file, e, "pretokenizers", path).Select(x => PreTokenizer(file, x.Element, x.Path)!).ToArray()),
            "Split" => new SplitPreTokenizer(Pattern(file, e, path), Behavior(file, e, path), Bool(e, "invert") ?? false),
            "ByteLevel" => new ByteLevelPreTokenizer(Bool(e, "add_prefix_space") ?? true, Bool(e, "use_regex") ?? true),
            "Metaspace" => new MetaspacePreTokenizer(Replacement(file, e, path), PrependScheme(file, e, path), Bool(e, "split") ?? true),
            "Digits" => new SplitPreTokenizer(new CodePointRegex((Bool(e, "individual_digits") ?? false) ? @"\p{N}" : @"\p{N}+"), SplitBehavior.Isolated, false),
            "Whitespace" => new SplitPreTokenizer(new CodePointRegex(@"\w+|[^\w\s]+"), SplitBehavior.Removed, true),
            "WhitespaceSplit" => new SplitPreTokenizer(new CodePointRegex(@"\s+"), SplitBehavior.Removed, false),
            "Punctuation" => new SplitPreTokenizer(new CodePointRegex(@"\p{P}|[$+<=>^`|~]"), Behavior(file, e, path, "Isolated"), false),
            _ => throw Unsupported(file, path, "pre-tokenizer", type),
        };
    }

    public static ITokenDecoder? Decoder(string file, JsonElement e, string path)
    {
        if (e.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(file, e, path);
        return type switch
        {
            "Sequence" => new SequenceDecoder(Items(file, e, "decoders", path).Select(x => Decoder(file, x.Element, x.Path)!).ToArray()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Replace" => new ReplaceDecoder(Pattern(file, e, path), Str(e, "content") ?? ""),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(Required(file, e, "content", path), Int(file, e, "start") ?? 0, Int(file, e, "stop") ?? 0),
            "Metaspace" => new MetaspaceDecoder(Replacement(file, e, path), PrependScheme(file, e, path) != MetaspacePrepend.Never),
            _ => throw Unsupported(file, path, "decoder", type),
        };
    }

    private static ModelFormatException Unsupported(string file, string path, string stage, string type) =>
        new(file, path + ".type", $"{stage} '{type}' is not implemented by vkpeft (its tokenization would differ from Hugging Face's)");

    private static string TypeOf(string file, JsonElement e, string path)
    {
        if (e.ValueKind != JsonValueKind.Object || Str(e, "type") is not { } t)
            throw new ModelFormatException(file, path + ".type", "expected an object with a \"type\"");
        return t;
    }

    private static string Required(string file, JsonElement e, string name, string path) =>
        Str(e, name) ?? throw new ModelFormatException(file, $"{path}.{name}", "missing or not a string");

    private static List<(JsonElement Element, string Path)> Items(string file, JsonElement e, string name, string path)
    {
        if (!e.TryGetProperty(name, out var arr) || arr.ValueKind != JsonValueKind.Array)
            throw new ModelFormatException(file, $"{path}.{name}", "missing or not an array");
        return arr.EnumerateArray().Select((x, i) => (x, $"{path}.{name}[{i}]")).ToList();
    }

    /// <summary>The "pattern" of Replace/Split: {"String": literal} or {"Regex": expression}.</summary>
    private static CodePointRegex Pattern(string file, JsonElement e, string path)
    {
        if (!e.TryGetProperty("pattern", out var p) || p.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(file, path + ".pattern", "missing {\"String\": …} or {\"Regex\": …}");
        if (Str(p, "String") is { } literal) return new CodePointRegex(Regex.Escape(literal));
        if (Str(p, "Regex") is { } rx)
        {
            try { return new CodePointRegex(rx); }
            catch (ArgumentException ex) { throw new ModelFormatException(file, path + ".pattern.Regex", $"regular expression not supported: {ex.Message}"); }
        }
        throw new ModelFormatException(file, path + ".pattern", "expected {\"String\": …} or {\"Regex\": …}");
    }

    private static SplitBehavior Behavior(string file, JsonElement e, string path, string fallback = "Isolated") =>
        (Str(e, "behavior") ?? fallback) switch
        {
            "Removed" => SplitBehavior.Removed,
            "Isolated" => SplitBehavior.Isolated,
            "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
            "MergedWithNext" => SplitBehavior.MergedWithNext,
            "Contiguous" => SplitBehavior.Contiguous,
            var b => throw new ModelFormatException(file, path + ".behavior", $"unknown split behavior '{b}'"),
        };

    private static string Replacement(string file, JsonElement e, string path)
    {
        string r = Str(e, "replacement") ?? "\u2581";
        if (r.Length != 1) throw new ModelFormatException(file, path + ".replacement", $"expected one character, got '{r}'");
        return r;
    }

    private static MetaspacePrepend PrependScheme(string file, JsonElement e, string path) =>
        Str(e, "prepend_scheme") switch
        {
            "always" => MetaspacePrepend.Always,
            "first" => MetaspacePrepend.First,
            "never" => MetaspacePrepend.Never,
            null => (Bool(e, "add_prefix_space") ?? true) ? MetaspacePrepend.Always : MetaspacePrepend.Never,
            var s => throw new ModelFormatException(file, path + ".prepend_scheme", $"unknown prepend scheme '{s}'"),
        };
}

// ------------------------------------------------------------------ normalizers

public sealed class SequenceNormalizer(ITextNormalizer[] items) : ITextNormalizer
{
    public string Normalize(string text)
    {
        foreach (var n in items) text = n.Normalize(text);
        return text;
    }
}

/// <summary>Prepends a string to non-empty text.</summary>
public sealed class PrependNormalizer(string prefix) : ITextNormalizer
{
    public string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

public sealed class ReplaceNormalizer(CodePointRegex pattern, string content) : ITextNormalizer
{
    public string Normalize(string text) => ReplaceAll(pattern, text, content);

    internal static string ReplaceAll(CodePointRegex pattern, string text, string content)
    {
        var matches = pattern.Matches(text);
        if (matches.Count == 0) return text;
        var sb = new StringBuilder(text.Length);
        int pos = 0;
        foreach (var (start, len) in matches)
        {
            sb.Append(text, pos, start - pos).Append(content);
            pos = start + len;
        }
        return sb.Append(text, pos, text.Length - pos).ToString();
    }
}

public sealed class UnicodeNormalizer(NormalizationForm form) : ITextNormalizer
{
    public string Normalize(string text) => UnicodeNormalization.Normalize(text, form);
}

public sealed class LowercaseNormalizer : ITextNormalizer
{
    public string Normalize(string text) => text.ToLowerInvariant();
}

public sealed class StripNormalizer(bool left, bool right) : ITextNormalizer
{
    public string Normalize(string text) => left && right ? text.Trim() : left ? text.TrimStart() : right ? text.TrimEnd() : text;
}

/// <summary>Removes combining marks (applied after an NFD/NFKD normalizer, as tokenizer.json files arrange).</summary>
public sealed class StripAccentsNormalizer : ITextNormalizer
{
    public string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes())
            if (Rune.GetUnicodeCategory(r) != System.Globalization.UnicodeCategory.NonSpacingMark) sb.Append(r.ToString());
        return sb.ToString();
    }
}

// ------------------------------------------------------------------ pre-tokenizers

public enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

public enum MetaspacePrepend { Always, First, Never }

public sealed class SequencePreTokenizer(IPreTokenizer[] items) : IPreTokenizer
{
    public List<TextPiece> Split(List<TextPiece> pieces)
    {
        foreach (var p in items) pieces = p.Split(pieces);
        return pieces;
    }
}

/// <summary>Splits each piece at the pattern's matches (or between them when inverted), placing matches by behavior.</summary>
public sealed class SplitPreTokenizer(CodePointRegex pattern, SplitBehavior behavior, bool invert) : IPreTokenizer
{
    public List<TextPiece> Split(List<TextPiece> pieces)
    {
        var result = new List<TextPiece>();
        foreach (var piece in pieces)
        {
            int before = result.Count;
            foreach (var s in SplitText(piece.Text))
                result.Add(new TextPiece(s, piece.First && result.Count == before));
        }
        return result;
    }

    public List<string> SplitText(string text)
    {
        // Segments covering the text: (start, length, isDelimiter).
        var segments = new List<(int Start, int Length, bool Match)>();
        int pos = 0;
        foreach (var (start, len) in pattern.Matches(text))
        {
            if (start > pos) segments.Add((pos, start - pos, invert));
            segments.Add((start, len, !invert));
            pos = start + len;
        }
        if (pos < text.Length) segments.Add((pos, text.Length - pos, invert));

        var output = new List<string>();
        bool previousWasMatch = false;
        string? carry = null;   // MergedWithNext: delimiter waiting for the next segment
        foreach (var (start, len, match) in segments)
        {
            string s = text.Substring(start, len);
            switch (behavior)
            {
                case SplitBehavior.Removed:
                    if (!match) output.Add(s);
                    break;
                case SplitBehavior.Isolated:
                    output.Add(s);
                    break;
                case SplitBehavior.MergedWithPrevious:
                    if (match && output.Count > 0 && !previousWasMatch) output[^1] += s;
                    else output.Add(s);
                    break;
                case SplitBehavior.MergedWithNext:
                    if (match)
                    {
                        if (carry != null) output.Add(carry);
                        carry = s;
                    }
                    else
                    {
                        output.Add((carry ?? "") + s);
                        carry = null;
                    }
                    break;
                case SplitBehavior.Contiguous:
                    if (match && previousWasMatch && output.Count > 0) output[^1] += s;
                    else output.Add(s);
                    break;
            }
            previousWasMatch = match;
        }
        if (carry != null) output.Add(carry);
        return output;
    }
}

/// <summary>GPT-2 byte-level: optional leading space, optional GPT-2 split, then every UTF-8 byte as its printable character.</summary>
public sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : IPreTokenizer
{
    private static readonly SplitPreTokenizer Gpt2Split = new(new CodePointRegex(HfPipeline.Gpt2Pattern), SplitBehavior.Isolated, false);

    public List<TextPiece> Split(List<TextPiece> pieces)
    {
        if (addPrefixSpace) pieces = pieces.Select(p => p.Text.StartsWith(' ') ? p : p with { Text = " " + p.Text }).ToList();
        if (useRegex) pieces = Gpt2Split.Split(pieces);
        return pieces.Select(p => p with { Text = ByteLevelAlphabet.Encode(p.Text) }).ToList();
    }
}

/// <summary>SentencePiece-style: spaces become the replacement character (▁), a ▁ is prepended, pieces split before each ▁.</summary>
public sealed class MetaspacePreTokenizer(string replacement, MetaspacePrepend prepend, bool split) : IPreTokenizer
{
    public List<TextPiece> Split(List<TextPiece> pieces)
    {
        var result = new List<TextPiece>();
        foreach (var p in pieces)
        {
            string t = p.Text.Replace(" ", replacement, StringComparison.Ordinal);
            bool add = prepend == MetaspacePrepend.Always || (prepend == MetaspacePrepend.First && p.First);
            if (add && t.Length > 0 && !t.StartsWith(replacement, StringComparison.Ordinal)) t = replacement + t;
            if (!split) { result.Add(p with { Text = t }); continue; }
            int start = 0;
            for (int i = 1; i <= t.Length; i++)
            {
                if (i == t.Length || t[i] == replacement[0])
                {
                    if (i > start) result.Add(new TextPiece(t[start..i], p.First && start == 0));
                    start = i;
                }
            }
        }
        return result;
    }
}

/// <summary>GPT-2's reversible map from bytes to printable characters (bytes_to_unicode).</summary>
public static class ByteLevelAlphabet
{
    private static readonly char[] ByteToChar = new char[256];
    private static readonly Dictionary<char, byte> CharToByte = [];

    static ByteLevelAlphabet()
    {
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            ByteToChar[b] = printable ? (char)b : (char)(256 + n++);
            CharToByte[ByteToChar[b]] = (byte)b;
        }
    }

    public static string Encode(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var chars = new char[utf8.Length];
        for (int i = 0; i < utf8.Length; i++) chars[i] = ByteToChar[utf8[i]];
        return new string(chars);
    }

    /// <summary>The bytes a token stands for; a token with a character outside the alphabet stands for its own UTF-8.</summary>
    public static void AppendBytes(string token, List<byte> output)
    {
        int mark = output.Count;
        foreach (char c in token)
        {
            if (!CharToByte.TryGetValue(c, out byte b))
            {
                output.RemoveRange(mark, output.Count - mark);
                output.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
            output.Add(b);
        }
    }
}

// ------------------------------------------------------------------ decoders

public sealed class SequenceDecoder(ITokenDecoder[] items) : ITokenDecoder
{
    public List<string> Decode(List<string> tokens)
    {
        foreach (var d in items) tokens = d.Decode(tokens);
        return tokens;
    }
}

public sealed class ByteLevelDecoder : ITokenDecoder
{
    public List<string> Decode(List<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens) ByteLevelAlphabet.AppendBytes(t, bytes);
        return [Encoding.UTF8.GetString(bytes.ToArray())];
    }
}

public sealed class ReplaceDecoder(CodePointRegex pattern, string content) : ITokenDecoder
{
    public List<string> Decode(List<string> tokens) => tokens.Select(t => ReplaceNormalizer.ReplaceAll(pattern, t, content)).ToList();
}

/// <summary>Runs of &lt;0xXX&gt; tokens become their UTF-8 text, or one U+FFFD per byte when the run is not valid UTF-8.</summary>
public sealed class ByteFallbackDecoder : ITokenDecoder
{
    private static readonly UTF8Encoding Strict = new(false, true);

    public List<string> Decode(List<string> tokens)
    {
        var result = new List<string>(tokens.Count);
        var pending = new List<byte>();
        void Flush()
        {
            if (pending.Count == 0) return;
            try { result.Add(Strict.GetString(pending.ToArray())); }
            catch (DecoderFallbackException) { for (int i = 0; i < pending.Count; i++) result.Add("\uFFFD"); }
            pending.Clear();
        }
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                pending.Add(b);
            else
            {
                Flush();
                result.Add(t);
            }
        }
        Flush();
        return result;
    }
}

public sealed class FuseDecoder : ITokenDecoder
{
    public List<string> Decode(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary>Removes up to <c>start</c> leading and <c>stop</c> trailing copies of a character from every token.</summary>
public sealed class StripDecoder(string content, int start, int stop) : ITokenDecoder
{
    public List<string> Decode(List<string> tokens) => tokens.Select(t =>
    {
        int a = 0, b = t.Length;
        for (int i = 0; i < start && a < b && t.AsSpan(a).StartsWith(content); i++) a += content.Length;
        for (int i = 0; i < stop && b - content.Length >= a && t.AsSpan(a, b - a).EndsWith(content); i++) b -= content.Length;
        return t[a..b];
    }).ToList();
}

/// <summary>▁ back to spaces; the first token loses its leading space when a prefix was added.</summary>
public sealed class MetaspaceDecoder(string replacement, bool prefixAdded) : ITokenDecoder
{
    public List<string> Decode(List<string> tokens) => tokens.Select((t, i) =>
    {
        string s = t.Replace(replacement, " ", StringComparison.Ordinal);
        return i == 0 && prefixAdded && s.StartsWith(' ') ? s[1..] : s;
    }).ToList();
}
