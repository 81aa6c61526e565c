// The server's KV cache as a pool of fixed-size pages (vLLM's paged attention): one device tensor per layer for keys
// and one for values, each [pages·pageSize, kv_dim]. A sequence holds a page table; at admission it reserves the pages
// its prompt and completion limit can need (so a running sequence never runs out), takes them as it grows and gives
// everything back when it ends. Reserved pages count against the server's memory budget alongside resident adapters.
// Used on the scheduler's thread; the counters are read by /metrics from any thread.
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

/// <summary>One sequence's pages: the page table (logical page i holds its keys i·pageSize…) and what it reserved.</summary>
public sealed class KvSequence
{
    internal KvSequence(int reserved) => Reserved = reserved;

    internal List<int> Table { get; } = [];
    /// <summary>The page ids in logical order.</summary>
    public IReadOnlyList<int> Pages => Table;
    /// <summary>Pages reserved for this sequence (taken ones included).</summary>
    public int Reserved { get; }
    internal bool Released { get; set; }
}

public sealed class KvPagePool : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly Stack<int> _free;
    private readonly object _lock = new();
    private int _reserved, _peak;

    /// <param name="pages">Pages in the pool (every layer holds that many for keys and for values).</param>
    /// <param name="pageSize">Tokens per page.</param>
    public KvPagePool(VulkanContext ctx, LlamaConfig config, int pages, int pageSize)
    {
        if (pages < 1) throw new SettingException($"{ServeSettings.KvPages} must be ≥ 1, got {pages}");
        if (pageSize < 1) throw new SettingException($"{ServeSettings.KvPageSize} must be ≥ 1, got {pageSize}");
        Pages = pages;
        PageSize = pageSize;
        using var scope = new TensorScope();
        K = new DeviceTensor[config.NLayers];
        V = new DeviceTensor[config.NLayers];
        for (int l = 0; l < config.NLayers; l++)
        {
            K[l] = scope.Add(DeviceTensor.Create(ctx, $"serve.kv_pages.{l}.k", DType.F32, [(long)pages * pageSize, config.KvDim], MemoryCategory.Activations));
            V[l] = scope.Add(DeviceTensor.Create(ctx, $"serve.kv_pages.{l}.v", DType.F32, [(long)pages * pageSize, config.KvDim], MemoryCategory.Activations));
            if (K[l].Segments.Count != 1)
                throw new SettingException($"{ServeSettings.KvPages}: {pages} pages of {pageSize} tokens make a {K[l].Bytes >> 20} MiB per-layer pool, more than one device binding holds; use fewer pages");
        }
        PageBytes = (long)pageSize * config.KvDim * sizeof(float) * 2 * config.NLayers;
        _owned = scope.Keep();
        _free = new Stack<int>(Enumerable.Range(0, pages).Reverse());
    }

    public int Pages { get; }
    public int PageSize { get; }
    /// <summary>Device bytes of one page over every layer, keys and values.</summary>
    public long PageBytes { get; }
    /// <summary>[layer]: keys [pages·pageSize, kv_dim] (rotated), values alike.</summary>
    public DeviceTensor[] K { get; }
    public DeviceTensor[] V { get; }

    /// <summary>Pages holding keys now.</summary>
    public int Used { get { lock (_lock) return Pages - _free.Count; } }
    public int Free { get { lock (_lock) return _free.Count; } }
    /// <summary>The most pages in use at once since the pool was made.</summary>
    public int PeakUsed { get { lock (_lock) return _peak; } }
    /// <summary>Pages promised to running sequences (taken or not yet).</summary>
    public int Reserved { get { lock (_lock) return _reserved; } }
    public long ReservedBytes => Reserved * PageBytes;

    /// <summary>Pages that hold <paramref name="tokens"/> tokens.</summary>
    public int PagesFor(int tokens) => (tokens + PageSize - 1) / PageSize;

    /// <summary>Reserves pages for a sequence of up to <paramref name="tokens"/> tokens; null when not enough are unreserved.</summary>
    public KvSequence? TryReserve(int tokens)
    {
        int need = PagesFor(tokens);
        lock (_lock)
        {
            if (_reserved + need > Pages) return null;
            _reserved += need;
        }
        return new KvSequence(need);
    }

    /// <summary>Takes pages until <paramref name="sequence"/> holds <paramref name="tokens"/> tokens (within its reservation).</summary>
    public void Grow(KvSequence sequence, int tokens)
    {
        int need = PagesFor(tokens);
        if (need > sequence.Reserved) throw new InvalidOperationException($"a sequence of {tokens} tokens needs {need} pages; it reserved {sequence.Reserved}");
        lock (_lock)
        {
            while (sequence.Table.Count < need) sequence.Table.Add(_free.Pop());   // reserved pages are always free
            _peak = Math.Max(_peak, Pages - _free.Count);
        }
    }

    /// <summary>Gives back a sequence's pages and reservation (once).</summary>
    public void Release(KvSequence sequence)
    {
        if (sequence.Released) return;
        sequence.Released = true;
        lock (_lock)
        {
            foreach (int p in sequence.Table) _free.Push(p);
            _reserved -= sequence.Reserved;
        }
        sequence.Table.Clear();
    }

    /// <summary>The pool row of a sequence's token <paramref name="position"/>.</summary>
    public long Row(KvSequence sequence, int position) => (long)sequence.Table[position / PageSize] * PageSize + position % PageSize;

    /// <summary>
    /// Runs of a sequence's positions [from, from+count) that are contiguous in the pool: (first position, pool row,
    /// length), one per page touched.
    /// </summary>
    public IEnumerable<(int Position, long Row, int Count)> Runs(KvSequence sequence, int from, int count)
    {
        for (int p = from; p < from + count;)
        {
            int n = Math.Min(from + count - p, PageSize - p % PageSize);
            yield return (p, Row(sequence, p), n);
            p += n;
        }
    }

    /// <summary>The sequence as a paged-attention entry for rows [firstRow, firstRow+rows) at <paramref name="startPos"/>.</summary>
    public static PagedSequence Attend(KvSequence sequence, int firstRow, int rows, int startPos) => new(firstRow, rows, startPos, [.. sequence.Table]);

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
