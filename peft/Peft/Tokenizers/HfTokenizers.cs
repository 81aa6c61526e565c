// Hugging Face tokenizers: tokenizer.json (BPE: byte-level through Microsoft.ML.Tokenizers, Metaspace/SentencePiece
// style through the score-merge encoder with score = -merge rank) and SentencePiece tokenizer.model.
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using VkPeft.Peft.Formats;

namespace VkPeft.Peft.Tokenizers;

public static class HfTokenizers
{
    /// <summary>GPT-2's pre-tokenizer split.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Llama 3's pre-tokenizer split (Qwen2 uses the same with single digits).</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>SentencePiece model file (tokenizer.model) through Microsoft.ML.Tokenizers.</summary>
    public static ITextTokenizer LoadSentencePiece(string path, int? bos = null, int? eos = null)
    {
        using var fs = File.OpenRead(path);
        SentencePieceTokenizer sp;
        try
        {
            sp = SentencePieceTokenizer.Create(fs, addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not ModelFormatException)
        {
            throw new ModelFormatException(path, "model", "not a readable SentencePiece model: " + e.Message, e);
        }
        return new MlTokenizerAdapter(sp, sp.Vocabulary.Count, bos ?? sp.BeginningOfSentenceId, eos ?? sp.EndOfSentenceId);
    }

    /// <summary>tokenizer.json with a BPE model. Throws <see cref="ModelFormatException"/> for other model types.</summary>
    public static ITextTokenizer LoadTokenizerJson(string path, int bos, int eos)
    {
        using var doc = JsonFields.ParseFile(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "json", "tokenizer.json must be a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, "model", "missing tokenizer model object");
        string type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "BPE";
        if (type != "BPE")
            throw new ModelFormatException(path, "model.type", $"unsupported tokenizer model '{type}' (supported: BPE)");
        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, "model.vocab", "missing vocabulary");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject()) vocab[p.Name] = JsonFields.RequireInt(path, "model.vocab." + p.Name, p.Value);
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        int addedCount = 0;
        if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            foreach (var a in added.EnumerateArray())
                if (a.ValueKind == JsonValueKind.Object && a.TryGetProperty("content", out var c) && a.TryGetProperty("id", out var id))
                {
                    string content = JsonFields.RequireString(path, $"added_tokens[{addedCount}].content", c);
                    int tokenId = JsonFields.RequireInt(path, $"added_tokens[{addedCount}].id", id);
                    special[content] = tokenId;
                    vocab.TryAdd(content, tokenId);
                    addedCount++;
                }
        // Ids index the vocabulary arrays: each must be non-negative and the largest at most what the entries justify.
        foreach (var (piece, tokenId) in vocab)
            if (tokenId < 0 || tokenId >= vocab.Count + addedCount)
                throw new ModelFormatException(path, "model.vocab." + piece, $"token id {tokenId} outside 0..{vocab.Count + addedCount - 1} (the file lists {vocab.Count} tokens)");

        var merges = new List<(string A, string B)>();
        if (model.TryGetProperty("merges", out var mergesEl) && mergesEl.ValueKind == JsonValueKind.Array)
        {
            foreach (var m in mergesEl.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String)
                {
                    string s = m.GetString()!;
                    int sp = s.Length < 2 ? -1 : s.IndexOf(' ', 1);
                    if (sp < 0) throw new ModelFormatException(path, "model.merges", $"merge '{s}' has no separating space");
                    merges.Add((s[..sp], s[(sp + 1)..]));
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
                    merges.Add((JsonFields.RequireString(path, "model.merges", m[0]), JsonFields.RequireString(path, "model.merges", m[1])));
                else throw new ModelFormatException(path, "model.merges", "each merge must be \"a b\" or [a, b]");
            }
        }

        int vocabSize = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        if (ContainsType(root, "ByteLevel"))
        {
            string pattern = FindSplitPattern(root) ?? Gpt2Pattern;
            try
            {
                return CreateByteLevel(vocab, merges, pattern, special, vocabSize, bos, eos);
            }
            catch (ArgumentException e)
            {
                throw new ModelFormatException(path, "pre_tokenizer", "the split pattern or the BPE vocabulary is not usable: " + e.Message, e);
            }
        }

        // Metaspace (SentencePiece-converted) BPE: equivalent to score-merging with score = -rank.
        var pieces = new byte[vocabSize][];
        var scores = new float[vocabSize];
        Array.Fill(scores, float.NegativeInfinity);
        foreach (var (piece, id) in vocab) pieces[id] = Encoding.UTF8.GetBytes(piece.Replace('\u2581', ' '));
        for (int i = 0; i < vocabSize; i++) pieces[i] ??= [];
        for (int rank = 0; rank < merges.Count; rank++)
        {
            if (vocab.TryGetValue(merges[rank].A + merges[rank].B, out int id) && float.IsNegativeInfinity(scores[id]))
                scores[id] = -rank;
        }
        bool prefix = ContainsType(root, "Prepend") || ContainsType(root, "Metaspace");
        return new ScoreMergeTokenizer(pieces, scores, bos, eos, special.Values, addDummyPrefix: prefix);
    }

    /// <summary>Byte-level BPE (GPT-2, Llama 3, Qwen2) through Microsoft.ML.Tokenizers.</summary>
    public static ITextTokenizer CreateByteLevel(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges,
        string pattern, IReadOnlyDictionary<string, int> special, int vocabSize, int bos, int eos)
    {
        var specialDict = special.Count > 0 ? special.ToDictionary(kv => kv.Key, kv => kv.Value) : null;
        var options = new BpeOptions(vocab.Select(kv => new KeyValuePair<string, int>(kv.Key, kv.Value)))
        {
            Merges = merges.Select(m => m.A + " " + m.B).ToList(),
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), specialDict),
            SpecialTokens = specialDict,
        };
        return new MlTokenizerAdapter(BpeTokenizer.Create(options), vocabSize, bos, eos);
    }

    private static bool ContainsType(JsonElement e, string type)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    if (p.Name == "model" || p.Name == "added_tokens") continue;
                    if (p.Name == "type" && p.Value.ValueKind == JsonValueKind.String && p.Value.GetString() == type) return true;
                    if (ContainsType(p.Value, type)) return true;
                }
                return false;
            case JsonValueKind.Array:
                foreach (var x in e.EnumerateArray())
                    if (ContainsType(x, type)) return true;
                return false;
            default:
                return false;
        }
    }

    private static string? FindSplitPattern(JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) return null;
        var stack = new Stack<JsonElement>();
        stack.Push(pre);
        while (stack.Count > 0)
        {
            var e = stack.Pop();
            if (e.ValueKind == JsonValueKind.Array)
            {
                foreach (var x in e.EnumerateArray()) stack.Push(x);
                continue;
            }
            if (e.ValueKind != JsonValueKind.Object) continue;
            if (e.TryGetProperty("type", out var ty) && ty.ValueKind == JsonValueKind.String && ty.GetString() == "Split"
                && e.TryGetProperty("pattern", out var pat) && pat.ValueKind == JsonValueKind.Object
                && pat.TryGetProperty("Regex", out var rx) && rx.ValueKind == JsonValueKind.String)
                return rx.GetString();
            if (e.TryGetProperty("pretokenizers", out var inner)) stack.Push(inner);
        }
        return null;
    }
}
