// SentencePiece-BPE style tokenizer driven by piece scores: llama2.c tokenizer.bin, GGUF "llama" vocabularies
// and Metaspace BPE tokenizer.json files. Encoding = dummy-prefix space, one symbol per UTF-8 character
// (byte tokens <0xXX> when a character is missing), then repeatedly merge the adjacent pair whose merged
// piece has the highest score (leftmost on ties), exactly as llama2.c's run.c.
using System.Globalization;
using System.Text;

namespace VkPeft.Peft.Tokenizers;

public sealed class ScoreMergeTokenizer : ITextTokenizer
{
    private readonly string[] _pieces;              // each piece as Latin-1 text of its UTF-8 bytes
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _lookup = new(StringComparer.Ordinal);
    private readonly int[] _byteTokens = new int[256];
    private readonly int[] _byteValue;              // token id -> byte value for <0xXX> tokens, else -1
    private readonly bool[] _control;

    /// <param name="pieces">Piece bytes (UTF-8, spaces as ' ' not '▁').</param>
    /// <param name="scores">Merge priority per piece; -infinity marks a piece that merging never produces.</param>
    /// <param name="controlIds">Ids that decode to nothing (BOS, EOS, other control tokens).</param>
    public ScoreMergeTokenizer(IReadOnlyList<byte[]> pieces, IReadOnlyList<float> scores, int bos, int eos,
        IEnumerable<int>? controlIds = null, bool addDummyPrefix = true)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        ArgumentNullException.ThrowIfNull(scores);
        if (pieces.Count != scores.Count) throw new ArgumentException("pieces and scores differ in length", nameof(scores));
        VocabSize = pieces.Count;
        Bos = bos;
        Eos = eos;
        AddDummyPrefix = addDummyPrefix;
        _pieces = new string[pieces.Count];
        _scores = scores.ToArray();
        _byteValue = new int[pieces.Count];
        _control = new bool[pieces.Count];
        for (int i = 0; i < pieces.Count; i++)
        {
            _pieces[i] = Encoding.Latin1.GetString(pieces[i]);
            _lookup.TryAdd(_pieces[i], i);
            _byteValue[i] = ParseByteToken(_pieces[i]);
        }
        for (int b = 0; b < 256; b++)
        {
            string name = "<0x" + b.ToString("X2", CultureInfo.InvariantCulture) + ">";
            _byteTokens[b] = _lookup.TryGetValue(name, out int id) ? id : b + 3;
        }
        foreach (int id in controlIds ?? [])
            if (id >= 0 && id < _control.Length) _control[id] = true;
        if (bos >= 0 && bos < _control.Length) _control[bos] = true;
        if (eos >= 0 && eos < _control.Length) _control[eos] = true;
    }

    public int VocabSize { get; }
    public int Bos { get; }
    public int Eos { get; }
    public bool AddDummyPrefix { get; }

    /// <summary>The UTF-8 bytes of a piece as stored.</summary>
    public byte[] PieceBytes(int id) => Encoding.Latin1.GetBytes(_pieces[id]);

    public float Score(int id) => _scores[id];

    public int[] Encode(string text, bool bos = true, bool eos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<int>(text.Length / 2 + 4);
        if (bos) result.Add(Bos);
        if (text.Length > 0)
        {
            byte[] utf8 = Encoding.UTF8.GetBytes(AddDummyPrefix ? " " + text : text);
            result.AddRange(Merge(utf8));
        }
        if (eos) result.Add(Eos);
        return result.ToArray();
    }

    private List<int> Merge(byte[] utf8)
    {
        string s = Encoding.Latin1.GetString(utf8);
        // Symbols: a span of s with its token id; byte-fallback symbols never merge.
        var start = new List<int>();
        var len = new List<int>();
        var id = new List<int>();
        var mergeable = new List<bool>();
        int pos = 0;
        while (pos < utf8.Length)
        {
            int n = Utf8Length(utf8[pos]);
            if (pos + n > utf8.Length) n = 1;
            for (int k = 1; k < n; k++)
                if ((utf8[pos + k] & 0xC0) != 0x80) { n = 1; break; }
            if (_lookup.TryGetValue(s.Substring(pos, n), out int tok))
            {
                start.Add(pos); len.Add(n); id.Add(tok); mergeable.Add(true);
            }
            else
            {
                for (int k = 0; k < n; k++)
                {
                    start.Add(pos + k); len.Add(1); id.Add(_byteTokens[utf8[pos + k]]); mergeable.Add(false);
                }
            }
            pos += n;
        }

        int count = start.Count;
        var next = new int[count];
        var prev = new int[count];
        for (int i = 0; i < count; i++) { next[i] = i + 1 < count ? i + 1 : -1; prev[i] = i - 1; }
        var alive = Enumerable.Repeat(true, count).ToArray();
        var lens = len.ToArray();
        var ids = id.ToArray();
        var canMerge = mergeable.ToArray();

        var queue = new PriorityQueue<(int Left, int Right, int Len, int Id), (float NegScore, int Start)>();
        void TryPush(int l)
        {
            if (l < 0) return;
            int r = next[l];
            if (r < 0 || !canMerge[l] || !canMerge[r]) return;
            if (_lookup.TryGetValue(s.Substring(start[l], lens[l] + lens[r]), out int merged)
                && !float.IsNegativeInfinity(_scores[merged]))
                queue.Enqueue((l, r, lens[l] + lens[r], merged), (-_scores[merged], start[l]));
        }
        for (int i = 0; i + 1 < count; i++) TryPush(i);

        while (queue.TryDequeue(out var m, out _))
        {
            if (!alive[m.Left] || !alive[m.Right] || next[m.Left] != m.Right || lens[m.Left] + lens[m.Right] != m.Len) continue;
            lens[m.Left] = m.Len;
            ids[m.Left] = m.Id;
            alive[m.Right] = false;
            next[m.Left] = next[m.Right];
            if (next[m.Right] >= 0) prev[next[m.Right]] = m.Left;
            TryPush(prev[m.Left]);
            TryPush(m.Left);
        }

        var outIds = new List<int>(count);
        for (int i = count > 0 ? 0 : -1; i >= 0; i = next[i]) outIds.Add(ids[i]);
        return outIds;
    }

    private static int Utf8Length(byte lead) =>
        (lead & 0x80) == 0 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;

    private static int ParseByteToken(string piece)
    {
        if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && int.TryParse(piece.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int b))
            return b;
        return -1;
    }

    /// <summary>Bytes token <paramref name="id"/> contributes after <paramref name="prev"/> (llama2.c run.c decode).</summary>
    public byte[] DecodeTokenBytes(int prev, int id)
    {
        if (id < 0 || id >= VocabSize) throw new ArgumentOutOfRangeException(nameof(id), $"token {id} outside vocabulary of {VocabSize}");
        if (_control[id]) return [];
        string piece = _pieces[id];
        if ((prev == Bos || prev < 0) && piece.Length > 0 && piece[0] == ' ') piece = piece[1..];
        else if (_byteValue[id] >= 0) return [(byte)_byteValue[id]];
        return Encoding.Latin1.GetBytes(piece);
    }

    public string DecodeToken(int prev, int id) => Encoding.UTF8.GetString(DecodeTokenBytes(prev, id));

    /// <summary>Decodes a sequence; its first token is treated as following BOS (leading space dropped).</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 4);
        int prev = -1;
        foreach (int id in ids)
        {
            bytes.AddRange(DecodeTokenBytes(prev, id));
            prev = id;
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
