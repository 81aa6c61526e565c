// Adapts a Microsoft.ML.Tokenizers tokenizer (SentencePiece tokenizer.model, byte-level BPE) to ITextTokenizer.
using Microsoft.ML.Tokenizers;

namespace VkPeft.Peft.Tokenizers;

public sealed class MlTokenizerAdapter : ITextTokenizer
{
    private readonly Tokenizer _inner;

    public MlTokenizerAdapter(Tokenizer inner, int vocabSize, int bos, int eos)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        VocabSize = vocabSize;
        Bos = bos;
        Eos = eos;
    }

    public Tokenizer Inner => _inner;
    public int VocabSize { get; }
    public int Bos { get; }
    public int Eos { get; }

    public int[] Encode(string text, bool bos = true, bool eos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> body = _inner is SentencePieceTokenizer sp
            ? sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false)
            : _inner.EncodeToIds(text);
        var result = new List<int>(body.Count + 2);
        if (bos && Bos >= 0) result.Add(Bos);
        result.AddRange(body);
        if (eos && Eos >= 0) result.Add(Eos);
        return result.ToArray();
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var list = new List<int>(ids.Length);
        foreach (int id in ids)
            if (id != Bos && id != Eos) list.Add(id);
        return _inner.Decode(list);
    }

    public string DecodeToken(int prev, int id)
    {
        if (id == Bos || id == Eos) return "";
        if (prev < 0 || prev == Bos || prev == Eos) return _inner.Decode([id]);
        string before = _inner.Decode([prev]);
        string both = _inner.Decode([prev, id]);
        return both.StartsWith(before, StringComparison.Ordinal) ? both[before.Length..] : _inner.Decode([id]);
    }
}
