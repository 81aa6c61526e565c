// Hugging Face tokenizers: tokenizer.json through HfTokenizer, SentencePiece tokenizer.model and GGUF byte-level
// vocabularies through Microsoft.ML.Tokenizers.
using Microsoft.ML.Tokenizers;
using VkPeft.Peft.Formats;

namespace VkPeft.Peft.Tokenizers;

public static class HfTokenizers
{
    /// <summary>GPT-2's pre-tokenizer split.</summary>
    public const string Gpt2Pattern = HfPipeline.Gpt2Pattern;

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

    /// <summary>tokenizer.json (with tokenizer_config.json next to it): see <see cref="HfTokenizer.Load"/>.</summary>
    public static HfTokenizer LoadTokenizerJson(string path, int bos, int eos) => HfTokenizer.Load(path, bos, eos);

    /// <summary>Byte-level BPE (GPT-2, Llama 3, Qwen2) from a GGUF vocabulary: split by <paramref name="pattern"/>, bytes as
    /// GPT-2 characters, BPE (whole-word lookup first with <paramref name="ignoreMerges"/>, as Llama 3 does).</summary>
    public static ITextTokenizer CreateByteLevel(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string A, string B)> merges,
        string pattern, IReadOnlyDictionary<string, int> special, int vocabSize, int bos, int eos, bool ignoreMerges = false, string file = "GGUF",
        string? chatTemplate = null)
    {
        ArgumentNullException.ThrowIfNull(special);
        var model = new BpeModel(vocab, merges, unkToken: null, fuseUnk: false, byteFallback: false, ignoreMerges, file);
        var preTokenizer = new SequencePreTokenizer([
            new SplitPreTokenizer(new CodePointRegex(pattern), SplitBehavior.Isolated, invert: false),
            new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: false)]);
        var added = special.Select(kv => new AddedToken(kv.Value, kv.Key, Special: true, false, false, false, Normalized: false));
        return HfTokenizer.Create(file, model, null, preTokenizer, new ByteLevelDecoder(), added, bos, eos, vocabSize, chatTemplate);
    }
}
