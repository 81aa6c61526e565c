// A Hugging Face tokenizer.json (with the tokenizer_config.json next to it) run the way Hugging Face runs it: added
// tokens are cut out of the text first (special ones only unless special-token text is to be split as plain text), the
// rest is normalized, pre-tokenized and encoded by the BPE model, and the post-processor adds its special tokens.
// Decoding maps ids back to token strings, drops special tokens when asked, runs the decoder chain and, when
// tokenizer_config.json says so, the clean-up of spaces before punctuation.
using System.Text.Json;
using VkPeft.Peft.Formats;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Tokenizers;

/// <summary>An entry of tokenizer.json "added_tokens" (or tokenizer_config.json "added_tokens_decoder").</summary>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip, bool RStrip, bool SingleWord, bool Normalized);

public sealed class HfTokenizer : ITextTokenizer
{
    private readonly BpeModel _model;
    private readonly ITextNormalizer? _normalizer;
    private readonly IPreTokenizer? _preTokenizer;
    private readonly ITokenDecoder? _decoder;
    private readonly int[] _prefix, _suffix;                      // what the post-processor adds around one sequence
    private readonly Dictionary<int, AddedToken> _addedById = [];
    private readonly Dictionary<char, AddedToken[]> _addedByFirstChar = [];

    private HfTokenizer(HfTokenizer other, bool splitSpecialTokens)
    {
        _model = other._model; _normalizer = other._normalizer; _preTokenizer = other._preTokenizer; _decoder = other._decoder;
        _prefix = other._prefix; _suffix = other._suffix; _addedById = other._addedById; _addedByFirstChar = other._addedByFirstChar;
        VocabSize = other.VocabSize; Bos = other.Bos; Eos = other.Eos; BosToken = other.BosToken; EosToken = other.EosToken;
        CleanUpTokenizationSpaces = other.CleanUpTokenizationSpaces; ChatTemplate = other.ChatTemplate; Path = other.Path;
        ByteLevel = other.ByteLevel; SplitPattern = other.SplitPattern; PrependsSpace = other.PrependsSpace;
        SplitSpecialTokens = splitSpecialTokens;
    }

    private HfTokenizer(string path, BpeModel model, ITextNormalizer? normalizer, IPreTokenizer? preTokenizer, ITokenDecoder? decoder,
        int[] prefix, int[] suffix, IEnumerable<AddedToken> added)
    {
        Path = path; _model = model; _normalizer = normalizer; _preTokenizer = preTokenizer; _decoder = decoder;
        _prefix = prefix; _suffix = suffix;
        foreach (var a in added) _addedById[a.Id] = a;
        foreach (var g in _addedById.Values.Where(a => a.Content.Length > 0).GroupBy(a => a.Content[0]))
            _addedByFirstChar[g.Key] = g.OrderByDescending(a => a.Content.Length).ToArray();
        VocabSize = Math.Max(model.Size, _addedById.Count == 0 ? 0 : _addedById.Keys.Max() + 1);
    }

    /// <summary>A byte-level tokenizer built from parts (GGUF vocabularies): no post-processor tokens, no clean-up.</summary>
    public static HfTokenizer Create(string path, BpeModel model, ITextNormalizer? normalizer, IPreTokenizer? preTokenizer,
        ITokenDecoder? decoder, IEnumerable<AddedToken> added, int bos, int eos, int vocabSize, string? chatTemplate = null)
    {
        var t = new HfTokenizer(path, model, normalizer, preTokenizer, decoder, [], [], added)
        {
            Bos = bos, Eos = eos, ChatTemplate = chatTemplate, ByteLevel = true,
        };
        t = new HfTokenizer(t, false) { BosToken = t.TokenString(bos), EosToken = t.TokenString(eos) };
        if (t.VocabSize > vocabSize) throw new ModelFormatException(path, "vocab_size", $"tokenizer has {t.VocabSize} ids, more than {vocabSize}");
        return t;
    }

    /// <summary>The tokenizer.json this was read from.</summary>
    public string Path { get; }
    public int VocabSize { get; }
    public int Bos { get; private init; } = -1;
    public int Eos { get; private init; } = -1;
    public string? BosToken { get; private init; }
    public string? EosToken { get; private init; }

    /// <summary>tokenizer_config.json clean_up_tokenization_spaces (false when absent, as in current transformers).</summary>
    public bool CleanUpTokenizationSpaces { get; private init; }

    /// <summary>tokenizer_config.json chat_template (or chat_template.jinja next to it), null when there is none.</summary>
    public string? ChatTemplate { get; private init; }

    /// <summary>GPT-2 byte-level pre-tokenization (else SentencePiece style); with <see cref="SplitPattern"/> and
    /// <see cref="PrependsSpace"/> what a GGUF export needs to describe the tokenizer.</summary>
    public bool ByteLevel { get; private init; }

    /// <summary>The regex of the pre-tokenizer's Split stage (or GPT-2's when ByteLevel splits itself), else null.</summary>
    public string? SplitPattern { get; private init; }

    /// <summary>True when a word-start marker is prepended to the text (SentencePiece's dummy prefix).</summary>
    public bool PrependsSpace { get; private init; }

    public BpeModel Model => _model;

    /// <summary>The ids the post-processor puts before and after a sequence.</summary>
    public (IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix) SpecialFraming => (_prefix, _suffix);

    /// <summary>When true, special-token text in the input is tokenized as plain text (HF split_special_tokens=True).</summary>
    public bool SplitSpecialTokens { get; }

    /// <summary>The same tokenizer with special-token text in inputs matched (false, HF's default) or split as plain text.</summary>
    public HfTokenizer WithSplitSpecialTokens(bool split) => split == SplitSpecialTokens ? this : new HfTokenizer(this, split);

    public IReadOnlyCollection<AddedToken> AddedTokens => _addedById.Values;

    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var a) && a.Special;

    /// <summary>Id of a token string (added tokens first), or null.</summary>
    public int? TokenToId(string token)
    {
        foreach (var a in _addedById.Values) if (a.Content == token) return a.Id;
        return _model.TryGetId(token, out int id) ? id : null;
    }

    /// <summary>The token string of an id (as tokenizer.json spells it), or null for an id the tokenizer lacks.</summary>
    public string? TokenString(int id) => _addedById.TryGetValue(id, out var a) ? a.Content : _model.TokenOf(id);

    // ------------------------------------------------------------------ encoding

    /// <summary><paramref name="bos"/>: add the post-processor's special tokens (HF add_special_tokens); <paramref name="eos"/>: end with EOS.</summary>
    public int[] Encode(string text, bool bos = true, bool eos = false)
    {
        var ids = Encode(text, addSpecialTokens: bos);
        if (!eos || Eos < 0 || (ids.Length > 0 && ids[^1] == Eos)) return ids;
        return [.. ids, Eos];
    }

    /// <summary>HF tokenizer.encode(text, add_special_tokens).</summary>
    public int[] Encode(string text, bool addSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) ids.AddRange(_prefix);
        foreach (var (segment, start, addedId) in SplitAdded(text, normalized: false))
        {
            if (addedId >= 0) { ids.Add(addedId); continue; }
            string normalized = _normalizer?.Normalize(segment) ?? segment;
            foreach (var (inner, innerStart, innerId) in SplitAdded(normalized, normalized: true))
            {
                if (innerId >= 0) { ids.Add(innerId); continue; }
                var pieces = new List<TextPiece> { new(inner, start == 0 && innerStart == 0) };
                if (_preTokenizer != null) pieces = _preTokenizer.Split(pieces);
                foreach (var p in pieces) _model.Encode(p.Text, ids);
            }
        }
        if (addSpecialTokens) ids.AddRange(_suffix);
        return ids.ToArray();
    }

    /// <summary>Cuts added tokens (of the given "normalized" flag) out of the text: (text, start, -1) or ("", start, id).</summary>
    private List<(string Text, int Start, int Id)> SplitAdded(string text, bool normalized)
    {
        var result = new List<(string, int, int)>();
        int textStart = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!_addedByFirstChar.TryGetValue(text[i], out var candidates)) continue;
            AddedToken? hit = null;
            foreach (var a in candidates)
            {
                if (a.Normalized != normalized || (a.Special && SplitSpecialTokens)) continue;
                if (!text.AsSpan(i).StartsWith(a.Content, StringComparison.Ordinal)) continue;
                if (a.SingleWord && (i > 0 && IsWordChar(text[i - 1]) || i + a.Content.Length < text.Length && IsWordChar(text[i + a.Content.Length])))
                    continue;
                hit = a;
                break;
            }
            if (hit is null) continue;
            int start = i, end = i + hit.Content.Length;
            if (hit.LStrip) while (start > textStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (hit.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > textStart) result.Add((text[textStart..start], textStart, -1));
            result.Add(("", start, hit.Id));
            textStart = end;
            i = end - 1;
        }
        if (textStart < text.Length) result.Add((text[textStart..], textStart, -1));
        return result;
    }

    /// <summary>Length of the special token whose text starts at <paramref name="pos"/> (0 when none does).</summary>
    public int SpecialTokenLengthAt(string text, int pos)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (pos >= text.Length || !_addedByFirstChar.TryGetValue(text[pos], out var candidates)) return 0;
        foreach (var a in candidates)
            if (a.Special && text.AsSpan(pos).StartsWith(a.Content, StringComparison.Ordinal)) return a.Content.Length;
        return 0;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    // ------------------------------------------------------------------ decoding

    /// <summary>Text of the ids with special tokens dropped and the configured clean-up (what generation prints).</summary>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: true, cleanUp: CleanUpTokenizationSpaces);

    /// <summary>HF tokenizer.decode(ids, skip_special_tokens, clean_up_tokenization_spaces); ids the tokenizer lacks are skipped.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens, bool cleanUp)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var a))
            {
                if (!(skipSpecialTokens && a.Special)) tokens.Add(a.Content);
            }
            else if (_model.TokenOf(id) is { } t) tokens.Add(t);
        }
        string text = _decoder is null ? string.Join(' ', tokens) : string.Concat(_decoder.Decode(tokens));
        return cleanUp ? CleanUp(text) : text;
    }

    /// <summary>transformers' clean_up_tokenization: no space before . ? ! , and English contractions.</summary>
    public static string CleanUp(string text) => text
        .Replace(" .", ".", StringComparison.Ordinal).Replace(" ?", "?", StringComparison.Ordinal)
        .Replace(" !", "!", StringComparison.Ordinal).Replace(" ,", ",", StringComparison.Ordinal)
        .Replace(" ' ", "'", StringComparison.Ordinal).Replace(" n't", "n't", StringComparison.Ordinal)
        .Replace(" 'm", "'m", StringComparison.Ordinal).Replace(" 's", "'s", StringComparison.Ordinal)
        .Replace(" 've", "'ve", StringComparison.Ordinal).Replace(" 're", "'re", StringComparison.Ordinal);

    public string DecodeToken(int prev, int id) => DecodeToken(prev, id, skipSpecialTokens: true);

    /// <summary>The text <paramref name="id"/> adds after <paramref name="prev"/> (-1: at the start), without clean-up.</summary>
    public string DecodeToken(int prev, int id, bool skipSpecialTokens)
    {
        string alone = Decode([id], skipSpecialTokens, cleanUp: false);
        if (prev < 0) return alone;
        string before = Decode([prev], skipSpecialTokens, cleanUp: false);
        string both = Decode([prev, id], skipSpecialTokens, cleanUp: false);
        return both.StartsWith(before, StringComparison.Ordinal) ? both[before.Length..] : alone;
    }

    // ------------------------------------------------------------------ loading

    /// <summary>
    /// Reads tokenizer.json and, when present next to it, tokenizer_config.json (and chat_template.jinja).
    /// BOS/EOS come from tokenizer_config.json's bos_token/eos_token, else <paramref name="bosFallback"/>/<paramref name="eosFallback"/>
    /// (config.json's ids). Every unsupported feature is a <see cref="ModelFormatException"/> naming the file and field.
    /// </summary>
    public static HfTokenizer Load(string path, int bosFallback = -1, int eosFallback = -1)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        using var doc = JsonFields.ParseFile(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "json", "tokenizer.json must be a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, "model", "missing tokenizer model object");

        var bpe = ReadBpe(path, root, model);
        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var addedEl) && addedEl.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var a in addedEl.EnumerateArray())
            {
                string field = $"added_tokens[{i++}]";
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("id", out var idEl))
                    throw new ModelFormatException(path, field, "expected {\"id\": …, \"content\": \"…\"}");
                added.Add(ReadAdded(path, field, a, JsonFields.RequireInt(path, field + ".id", idEl)));
            }
        }
        // Ids index the vocabulary arrays: each must be non-negative and the largest at most what the entries justify.
        int entries = bpe.Size == 0 ? 0 : bpe.EntryCount;
        foreach (var a in added)
            if (a.Id < 0 || a.Id >= entries + added.Count)
                throw new ModelFormatException(path, $"added_tokens.{a.Content}", $"token id {a.Id} outside 0..{entries + added.Count - 1}");

        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        string configPath = System.IO.Path.Combine(dir, "tokenizer_config.json");
        JsonDocument? config = null;
        if (File.Exists(configPath)) config = JsonFields.ParseFile(configPath);
        using var __ = config;
        var cfg = config?.RootElement;
        if (cfg is { ValueKind: JsonValueKind.Object } c && c.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
            foreach (var p in dec.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out int id)) throw new ModelFormatException(configPath, $"added_tokens_decoder.{p.Name}", "key is not a token id");
                if (id < 0 || id > bpe.Size + added.Count + dec.EnumerateObject().Count())
                    throw new ModelFormatException(configPath, $"added_tokens_decoder.{p.Name}", $"token id {id} outside the vocabulary");
                if (added.All(a => a.Id != id)) added.Add(ReadAdded(configPath, $"added_tokens_decoder.{p.Name}", p.Value, id));
            }

        var (prefix, suffix) = PostProcessor(path, root.TryGetProperty("post_processor", out var pp) ? pp : default, "post_processor", added, bpe);
        var normalizer = root.TryGetProperty("normalizer", out var n) ? HfPipeline.Normalizer(path, n, "normalizer") : null;
        var preTokenizer = root.TryGetProperty("pre_tokenizer", out var pt) ? HfPipeline.PreTokenizer(path, pt, "pre_tokenizer") : null;
        var decoder = root.TryGetProperty("decoder", out var d) ? HfPipeline.Decoder(path, d, "decoder") : null;

        var probe = new HfTokenizer(path, bpe, normalizer, preTokenizer, decoder, prefix, suffix, added);
        string? bosToken = cfg is { ValueKind: JsonValueKind.Object } c1 ? TokenField(configPath, c1, "bos_token") : null;
        string? eosToken = cfg is { ValueKind: JsonValueKind.Object } c2 ? TokenField(configPath, c2, "eos_token") : null;
        int bos = bosToken is null ? bosFallback : probe.TokenToId(bosToken)
            ?? throw new ModelFormatException(configPath, "bos_token", $"'{bosToken}' is not a token of {path}");
        int eos = eosToken is null ? eosFallback : probe.TokenToId(eosToken)
            ?? throw new ModelFormatException(configPath, "eos_token", $"'{eosToken}' is not a token of {path}");

        // tokenizer_config.json add_bos_token/add_eos_token, when given, decide whether BOS/EOS frame a sequence.
        if (cfg is { ValueKind: JsonValueKind.Object } c3)
        {
            if (Bool(c3, "add_bos_token") is { } addBos && bos >= 0)
                prefix = addBos ? (prefix.Contains(bos) ? prefix : [bos, .. prefix]) : prefix.Where(x => x != bos).ToArray();
            if (Bool(c3, "add_eos_token") is { } addEos && eos >= 0)
                suffix = addEos ? (suffix.Contains(eos) ? suffix : [.. suffix, eos]) : suffix.Where(x => x != eos).ToArray();
        }
        string? template = cfg is { ValueKind: JsonValueKind.Object } c4 ? ChatTemplateField(configPath, c4) : null;
        string jinja = System.IO.Path.Combine(dir, "chat_template.jinja");
        if (template is null && File.Exists(jinja)) template = File.ReadAllText(jinja);

        string preJson = root.TryGetProperty("pre_tokenizer", out var preEl) ? preEl.GetRawText() : "null";
        string normJson = root.TryGetProperty("normalizer", out var normEl) ? normEl.GetRawText() : "null";
        bool byteLevel = preJson.Contains("\"ByteLevel\"", StringComparison.Ordinal);
        string? pattern = FindSplitRegex(preEl);
        if (pattern is null && byteLevel && preJson.Contains("\"use_regex\":true", StringComparison.Ordinal) | preJson.Contains("\"use_regex\": true", StringComparison.Ordinal))
            pattern = HfPipeline.Gpt2Pattern;
        return new HfTokenizer(path, bpe, normalizer, preTokenizer, decoder, prefix, suffix, added)
        {
            ByteLevel = byteLevel,
            SplitPattern = pattern,
            PrependsSpace = normJson.Contains("\"Prepend\"", StringComparison.Ordinal)
                || (preJson.Contains("\"Metaspace\"", StringComparison.Ordinal) && !preJson.Contains("\"never\"", StringComparison.Ordinal)),
            Bos = bos,
            Eos = eos,
            BosToken = bos >= 0 ? probe.TokenString(bos) : null,
            EosToken = eos >= 0 ? probe.TokenString(eos) : null,
            CleanUpTokenizationSpaces = cfg is { ValueKind: JsonValueKind.Object } c5 && (Bool(c5, "clean_up_tokenization_spaces") ?? false),
            ChatTemplate = template,
        };
    }

    /// <summary>The Regex of the first Split stage in a pre_tokenizer object (searching Sequence members).</summary>
    private static string? FindSplitRegex(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Array)
            return e.EnumerateArray().Select(FindSplitRegex).FirstOrDefault(x => x != null);
        if (e.ValueKind != JsonValueKind.Object) return null;
        if (Str(e, "type") == "Split" && e.TryGetProperty("pattern", out var p) && p.ValueKind == JsonValueKind.Object && Str(p, "Regex") is { } rx) return rx;
        return e.TryGetProperty("pretokenizers", out var inner) ? FindSplitRegex(inner) : null;
    }

    private static BpeModel ReadBpe(string path, JsonElement root, JsonElement model)
    {
        string type = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "?");
        if (type != "BPE")
            throw new ModelFormatException(path, "model.type", $"tokenizer model '{type}' is not implemented by vkpeft (supported: BPE)");
        if (Str(model, "continuing_subword_prefix") is { Length: > 0 } csp)
            throw new ModelFormatException(path, "model.continuing_subword_prefix", $"BPE with a continuing-subword prefix ('{csp}') is not implemented by vkpeft");
        if (Str(model, "end_of_word_suffix") is { Length: > 0 } eow)
            throw new ModelFormatException(path, "model.end_of_word_suffix", $"BPE with an end-of-word suffix ('{eow}', </w>-style) is not implemented by vkpeft");
        if (Dbl(model, "dropout") is > 0 and var dropout)
            throw new ModelFormatException(path, "model.dropout", $"BPE dropout {dropout} makes tokenization random; vkpeft needs it null or 0");
        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, "model.vocab", "missing vocabulary object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject()) vocab[p.Name] = JsonFields.RequireInt(path, "model.vocab." + p.Name, p.Value);
        int slack = root.TryGetProperty("added_tokens", out var addedList) && addedList.ValueKind == JsonValueKind.Array ? addedList.GetArrayLength() : 0;
        foreach (var (piece, id) in vocab)
            if (id < 0 || id >= vocab.Count + slack)
                throw new ModelFormatException(path, "model.vocab." + piece, $"token id {id} outside 0..{vocab.Count + slack - 1} (the file lists {vocab.Count} tokens)");
        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergesEl) && mergesEl.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var m in mergesEl.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String)
                {
                    string s = m.GetString()!;
                    int sp = s.Length < 2 ? -1 : s.IndexOf(' ', 1);
                    if (sp < 0) throw new ModelFormatException(path, $"model.merges[{i}]", $"merge '{s}' has no separating space");
                    merges.Add((s[..sp], s[(sp + 1)..]));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                else throw new ModelFormatException(path, $"model.merges[{i}]", "each merge must be \"a b\" or [\"a\", \"b\"]");
                i++;
            }
        }
        return new BpeModel(vocab, merges, Str(model, "unk_token"), Bool(model, "fuse_unk") ?? false,
            Bool(model, "byte_fallback") ?? false, Bool(model, "ignore_merges") ?? false, path);
    }

    private static AddedToken ReadAdded(string file, string field, JsonElement a, int? id)
    {
        if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("content", out var contentEl) || id is not { } i || i < 0)
            throw new ModelFormatException(file, field, "expected {\"id\": …, \"content\": \"…\"}");
        string content = JsonFields.RequireString(file, field + ".content", contentEl);
        bool special = Bool(a, "special") ?? false;
        return new AddedToken(i, content, special, Bool(a, "lstrip") ?? false, Bool(a, "rstrip") ?? false,
            Bool(a, "single_word") ?? false, Bool(a, "normalized") ?? !special);
    }

    /// <summary>The ids a post-processor puts before and after a single sequence.</summary>
    private static (int[] Prefix, int[] Suffix) PostProcessor(string file, JsonElement e, string path, List<AddedToken> added, BpeModel model)
    {
        if (e.ValueKind is JsonValueKind.Undefined or JsonValueKind.Null) return ([], []);
        if (e.ValueKind != JsonValueKind.Object) throw new ModelFormatException(file, path, "expected an object");
        int IdOf(string token, string field) =>
            added.FirstOrDefault(a => a.Content == token)?.Id ?? (model.TryGetId(token, out int id) ? id
                : throw new ModelFormatException(file, field, $"token '{token}' is not in the vocabulary"));
        string type = Str(e, "type") ?? throw new ModelFormatException(file, path + ".type", "missing");
        switch (type)
        {
            case "ByteLevel":
                return ([], []);
            case "Sequence":
                {
                    if (!e.TryGetProperty("processors", out var list) || list.ValueKind != JsonValueKind.Array)
                        throw new ModelFormatException(file, path + ".processors", "missing or not an array");
                    int[] pre = [], post = [];
                    int i = 0;
                    foreach (var p in list.EnumerateArray())
                    {
                        var (a, b) = PostProcessor(file, p, $"{path}.processors[{i++}]", added, model);
                        pre = [.. a, .. pre];
                        post = [.. post, .. b];
                    }
                    return (pre, post);
                }
            case "BertProcessing" or "RobertaProcessing":
                {
                    string Token(string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 2
                        ? JsonFields.RequireString(file, $"{path}.{name}[0]", v[0]) : throw new ModelFormatException(file, $"{path}.{name}", "expected [token, id]");
                    return ([IdOf(Token("cls"), path + ".cls")], [IdOf(Token("sep"), path + ".sep")]);
                }
            case "TemplateProcessing":
                {
                    if (!e.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
                        throw new ModelFormatException(file, path + ".single", "missing or not an array");
                    var specials = e.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object ? st : default;
                    var pre = new List<int>();
                    var post = new List<int>();
                    bool seenSequence = false;
                    int i = 0;
                    foreach (var item in single.EnumerateArray())
                    {
                        string field = $"{path}.single[{i++}]";
                        if (item.ValueKind != JsonValueKind.Object) throw new ModelFormatException(file, field, "expected an object");
                        if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                        if (!item.TryGetProperty("SpecialToken", out var sp) || sp.ValueKind != JsonValueKind.Object || Str(sp, "id") is not { } name)
                            throw new ModelFormatException(file, field, "expected {\"SpecialToken\": …} or {\"Sequence\": …}");
                        int[] ids = specials.ValueKind == JsonValueKind.Object && specials.TryGetProperty(name, out var entry)
                            && entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("ids", out var idsEl) && idsEl.ValueKind == JsonValueKind.Array
                            ? idsEl.EnumerateArray().Select(x => JsonFields.RequireInt(file, $"{path}.special_tokens.{name}.ids", x)).ToArray()
                            : [IdOf(name, field)];
                        (seenSequence ? post : pre).AddRange(ids);
                    }
                    return (pre.ToArray(), post.ToArray());
                }
            default:
                throw new ModelFormatException(file, path + ".type", $"post-processor '{type}' is not implemented by vkpeft");
        }
    }

    /// <summary>bos_token/eos_token: a string, or an object with "content"; null when absent or null.</summary>
    private static string? TokenField(string file, JsonElement cfg, string name)
    {
        if (!cfg.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && Str(v, "content") is { } s) return s;
        throw new ModelFormatException(file, name, "expected a token string or {\"content\": …}");
    }

    /// <summary>chat_template: a string, or a list of {name, template} (the "default" one is used).</summary>
    private static string? ChatTemplateField(string file, JsonElement cfg)
    {
        if (!cfg.TryGetProperty("chat_template", out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Array)
        {
            foreach (var t in v.EnumerateArray())
                if (t.ValueKind == JsonValueKind.Object && Str(t, "name") == "default" && Str(t, "template") is { } s) return s;
            throw new ModelFormatException(file, "chat_template", "a list of templates without one named \"default\"");
        }
        throw new ModelFormatException(file, "chat_template", "expected a string or a list of {name, template}");
    }
}
