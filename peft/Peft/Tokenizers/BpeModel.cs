// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE"}), as the reference implementation runs it:
// a word is split into one symbol per character (missing characters become <0xXX> byte tokens with byte_fallback, else
// the unk token, fused when fuse_unk), then the adjacent pair with the lowest merge rank is merged (leftmost first)
// until no merge applies. With ignore_merges a word that is itself in the vocabulary is one token without merging.
using System.Globalization;
using System.Text;

namespace VkPeft.Peft.Tokenizers;

public sealed class BpeModel
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _tokens;                                      // id -> token string ("" for holes)
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;       // (left id, right id) -> rank and merged id
    private readonly int[] _byteIds = new int[256];                         // <0xXX> ids, -1 when missing
    private readonly Dictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly Lock _cacheLock = new();
    private const int CacheLimit = 20_000;

    /// <param name="vocab">Token string -> id.</param>
    /// <param name="merges">Merges in rank order (left, right); a merge whose parts or result is missing is an error.</param>
    /// <param name="unkToken">Token for characters the vocabulary lacks (null: such characters are dropped).</param>
    public BpeModel(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges,
        string? unkToken, bool fuseUnk, bool byteFallback, bool ignoreMerges, string file = "tokenizer.json")
    {
        ArgumentNullException.ThrowIfNull(vocab);
        ArgumentNullException.ThrowIfNull(merges);
        _vocab = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        int size = _vocab.Count == 0 ? 0 : _vocab.Values.Max() + 1;
        _tokens = new string[size];
        Array.Fill(_tokens, "");
        foreach (var (t, id) in _vocab)
        {
            if (id < 0) throw new Formats.ModelFormatException(file, "model.vocab", $"token '{t}' has negative id {id}");
            _tokens[id] = t;
        }
        Merges = merges;
        _merges = new Dictionary<long, (int, int)>(merges.Count, PairComparer.Instance);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!_vocab.TryGetValue(l, out int a) || !_vocab.TryGetValue(r, out int b))
                throw new Formats.ModelFormatException(file, $"model.merges[{rank}]", $"merge '{l} {r}' uses a token missing from the vocabulary");
            if (!_vocab.TryGetValue(l + r, out int merged))
                throw new Formats.ModelFormatException(file, $"model.merges[{rank}]", $"merge result '{l + r}' is missing from the vocabulary");
            _merges.TryAdd(Key(a, b), (rank, merged));
        }
        if (unkToken != null)
        {
            if (!_vocab.TryGetValue(unkToken, out int unk))
                throw new Formats.ModelFormatException(file, "model.unk_token", $"unk token '{unkToken}' is not in the vocabulary");
            UnkId = unk;
        }
        FuseUnk = fuseUnk;
        ByteFallback = byteFallback;
        IgnoreMerges = ignoreMerges;
        for (int b = 0; b < 256; b++)
            _byteIds[b] = _vocab.TryGetValue(ByteTokenName(b), out int id) ? id : -1;
    }

    public int Size => _tokens.Length;

    /// <summary>Number of vocabulary entries (ids may leave holes).</summary>
    public int EntryCount => _vocab.Count;

    /// <summary>The merges in rank order, as read.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }
    public int UnkId { get; } = -1;
    public bool FuseUnk { get; }
    public bool ByteFallback { get; }
    public bool IgnoreMerges { get; }

    /// <summary>"&lt;0x0A&gt;" style name of a byte-fallback token.</summary>
    public static string ByteTokenName(int b) => "<0x" + b.ToString("X2", CultureInfo.InvariantCulture) + ">";

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    /// <summary>Token string of <paramref name="id"/>, or null outside the model's vocabulary.</summary>
    public string? TokenOf(int id) => id >= 0 && id < _tokens.Length && _tokens[id].Length > 0 ? _tokens[id] : null;

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>long's own hash (low ^ high) would send most id pairs to a few buckets; mix all 64 bits instead.</summary>
    private sealed class PairComparer : IEqualityComparer<long>
    {
        public static readonly PairComparer Instance = new();
        public bool Equals(long x, long y) => x == y;
        public int GetHashCode(long key) => (int)((ulong)(key * unchecked((long)0x9E3779B97F4A7C15)) >> 32);
    }

    /// <summary>Appends the ids of one pre-tokenized word to <paramref name="output"/>.</summary>
    public void Encode(string word, List<int> output)
    {
        if (word.Length == 0) return;
        lock (_cacheLock)
        {
            if (_cache.TryGetValue(word, out var hit)) { output.AddRange(hit); return; }
        }
        int[] ids = EncodeUncached(word);
        lock (_cacheLock)
        {
            if (_cache.Count >= CacheLimit) _cache.Clear();
            _cache[word] = ids;
        }
        output.AddRange(ids);
    }

    private int[] EncodeUncached(string word)
    {
        if (IgnoreMerges && _vocab.TryGetValue(word, out int whole)) return [whole];

        var ids = new List<int>(word.Length);
        int pendingUnk = 0;        // fused unknown characters waiting to be emitted
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            int n = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            string ch = word.Substring(i, n);
            i += n;
            if (_vocab.TryGetValue(ch, out int id))
            {
                FlushUnk(ids, ref pendingUnk);
                ids.Add(id);
                continue;
            }
            if (ByteFallback)
            {
                int len = Encoding.UTF8.GetBytes(ch, utf8);
                bool all = true;
                for (int k = 0; k < len; k++) all &= _byteIds[utf8[k]] >= 0;
                if (all)
                {
                    FlushUnk(ids, ref pendingUnk);
                    for (int k = 0; k < len; k++) ids.Add(_byteIds[utf8[k]]);
                    continue;
                }
            }
            if (UnkId < 0) continue;
            if (pendingUnk > 0 && !FuseUnk) FlushUnk(ids, ref pendingUnk);
            pendingUnk++;
        }
        FlushUnk(ids, ref pendingUnk);
        return MergeAll(ids);
    }

    private void FlushUnk(List<int> ids, ref int pending)
    {
        if (pending > 0) ids.Add(UnkId);
        pending = 0;
    }

    /// <summary>Merges the lowest-ranked adjacent pair (leftmost on ties) until none applies.</summary>
    private int[] MergeAll(List<int> symbols)
    {
        int count = symbols.Count;
        if (count < 2) return symbols.ToArray();
        var id = symbols.ToArray();
        var next = new int[count];
        var prev = new int[count];
        var alive = new bool[count];
        for (int i = 0; i < count; i++) { next[i] = i + 1 < count ? i + 1 : -1; prev[i] = i - 1; alive[i] = true; }

        var queue = new PriorityQueue<(int Pos, int NewId), (int Rank, int Pos)>();
        void Push(int left)
        {
            if (left < 0 || next[left] < 0) return;
            if (_merges.TryGetValue(Key(id[left], id[next[left]]), out var m)) queue.Enqueue((left, m.NewId), (m.Rank, left));
        }
        for (int i = 0; i + 1 < count; i++) Push(i);

        while (queue.TryDequeue(out var top, out _))
        {
            int left = top.Pos;
            if (!alive[left] || next[left] < 0) continue;
            int right = next[left];
            if (!_merges.TryGetValue(Key(id[left], id[right]), out var m) || m.NewId != top.NewId) continue;
            id[left] = m.NewId;
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            Push(prev[left]);
            Push(left);
        }
        var result = new List<int>(count);
        for (int i = 0; i >= 0; i = next[i]) result.Add(id[i]);
        return result.ToArray();
    }
}
