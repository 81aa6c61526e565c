// Continuous batching on one thread that owns the device: requests wait in a bounded queue, join the running batch as
// soon as a batch place, their adapter and the KV pages they can need are free (pages reserved from the memory budget
// shared with the resident adapters, taken as the sequence grows, given back when it ends), have their prompt
// prefilled in the same step as the other sequences' decode rows, and leave the batch when they stop, reach their
// limit or are cancelled. Tokens go back to each request through its own channel; sampling is per request
// (Generator.Sample with the request's seeded generator).
// A sequence whose adapter adds rows before it (prompt tuning's virtual tokens, prefix tuning's prefix) feeds those P
// rows first in its prefill step, so its KV pages hold them once and its tokens sit at positions P… (as generate).
using System.Diagnostics;
using System.Threading.Channels;
using VkPeft.Peft.Engine;

namespace VkPeft.Serve;

/// <summary>The queue is full: the caller should retry later (HTTP 503 with Retry-After).</summary>
public sealed class ServerBusyException(string message) : Exception(message);

/// <summary>The prompt and the adapter's virtual tokens or prefix rows do not fit the context (HTTP 400).</summary>
public sealed class ContextLengthException(string message) : ArgumentException(message);

/// <summary>A request's adapter scale other than 1 for an adapter the gathered kernels do not serve (HTTP 400).</summary>
public sealed class AdapterScaleException(string message) : ArgumentException(message);

/// <summary>One generation: the prompt, its adapter (null = the base), sampling and limits, and the tokens as they come.</summary>
public sealed class GenerationRequest
{
    public GenerationRequest(int[] prompt, string? adapter, SamplingOptions sampling, int maxTokens, IReadOnlyCollection<int> stopTokens, CancellationToken cancel)
    {
        Prompt = prompt;
        Adapter = adapter;
        Sampling = sampling;
        MaxTokens = maxTokens;
        StopTokens = stopTokens;
        Cancel = cancel;
    }

    public int[] Prompt { get; }
    public string? Adapter { get; }
    public SamplingOptions Sampling { get; }
    public int MaxTokens { get; }
    public IReadOnlyCollection<int> StopTokens { get; }
    public CancellationToken Cancel { get; }
    /// <summary>Factor on the adapter's delta for this request (gathered LoRA adapters; 1: as trained, 0: the base).</summary>
    public float AdapterScale { get; init; } = 1;
    /// <summary>Generated token ids; completed when the sequence ends (with the error, if it failed).</summary>
    public Channel<int> Tokens { get; } = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    /// <summary>"stop" (a stop token) or "length" (max_tokens or the context), set before Tokens completes.</summary>
    public string FinishReason { get; internal set; } = "length";
    internal long EnqueuedTicks { get; set; }
}

public sealed class BatchScheduler : IDisposable
{
    private sealed class Sequence(GenerationRequest request, KvSequence cache, IAdapterRuntime? adapter, int extraRows)
    {
        public GenerationRequest Request { get; } = request;
        public KvSequence Cache { get; } = cache;
        public IAdapterRuntime? Adapter { get; } = adapter;
        public Random Rng { get; } = new(request.Sampling.Seed);
        public int Position { get; set; }                 // rows already in the KV cache (the adapter's extra rows first)
        /// <summary>Rows of the next step: first the adapter's extra rows (placeholder id 0, MixedBatchForward fills them), then the prompt.</summary>
        public int[] Feed { get; set; } = [.. new int[extraRows], .. request.Prompt];
        public int Generated { get; set; }
        public int Limit { get; init; }                   // prompt + max tokens, at most the context left after the extra rows
    }

    private readonly MixedBatchForward _forward;
    private readonly AdapterPool _pool;
    private readonly ServeMetrics _metrics;
    private readonly int _maxQueue;
    private readonly LinkedList<GenerationRequest> _queue = new();
    private readonly object _lock = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly List<Sequence> _active = [];
    private readonly KvPagePool _kv;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    /// <param name="memoryBudget">Device bytes resident adapters and reserved KV pages may hold together.</param>
    public BatchScheduler(MixedBatchForward forward, AdapterPool pool, ServeMetrics metrics, int maxQueue, long memoryBudget)
    {
        _forward = forward;
        _pool = pool;
        _metrics = metrics;
        _maxQueue = maxQueue;
        _kv = forward.Cache;
        MemoryBudget = memoryBudget;
        pool.SharedBytes = () => _kv.ReservedBytes;
        pool.MemoryBudgetBytes = memoryBudget;
        _thread = new Thread(Run) { IsBackground = true, Name = "vkpeft-serve-scheduler" };
        _thread.Start();
    }

    public int MaxContext => _forward.MaxContext;
    public long MemoryBudget { get; }
    public int QueueDepth { get { lock (_lock) return _queue.Count; } }

    /// <summary>Queues a request; <see cref="ServerBusyException"/> when the queue is full.</summary>
    public void Submit(GenerationRequest request)
    {
        if (request.Prompt.Length == 0) throw new ArgumentException("the prompt has no tokens");
        if (request.Prompt.Length >= MaxContext) throw new ArgumentException($"the prompt has {request.Prompt.Length} tokens; the context holds {MaxContext}");
        lock (_lock)
        {
            if (_queue.Count >= _maxQueue) throw new ServerBusyException($"the server is busy ({_queue.Count} requests waiting); retry shortly");
            request.EnqueuedTicks = Stopwatch.GetTimestamp();
            _queue.AddLast(request);
            _metrics.QueueDepth = _queue.Count;
        }
        _signal.Release();
    }

    private void Run()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                DropCancelled();
                Admit();
                _pool.Sweep();
                _metrics.ActiveSequences = _active.Count;
                if (_active.Count == 0)
                {
                    _signal.Wait(200);
                    continue;
                }
                Step();
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                // A failed step fails the sequences in it; the server keeps serving the next requests.
                foreach (var s in _active.ToList()) Finish(s, e);
            }
        }
        foreach (var s in _active.ToList()) Finish(s, new OperationCanceledException("the server is shutting down"));
        lock (_lock)
        {
            foreach (var r in _queue) r.Tokens.Writer.TryComplete(new OperationCanceledException("the server is shutting down"));
            _queue.Clear();
        }
    }

    private void DropCancelled()
    {
        foreach (var s in _active.Where(s => s.Request.Cancel.IsCancellationRequested).ToList())
            Finish(s, new OperationCanceledException(s.Request.Cancel));
        lock (_lock)
        {
            for (var n = _queue.First; n != null;)
            {
                var next = n.Next;
                if (n.Value.Cancel.IsCancellationRequested)
                {
                    n.Value.Tokens.Writer.TryComplete(new OperationCanceledException(n.Value.Cancel));
                    _queue.Remove(n);
                }
                n = next;
            }
            _metrics.QueueDepth = _queue.Count;
        }
    }

    /// <summary>
    /// Moves queued requests into the batch, in order, while places are free, their rows fit this step, their adapter
    /// fits the pool and the KV pages they can need can be reserved.
    /// </summary>
    private void Admit()
    {
        int rows = _active.Sum(s => s.Feed.Length);
        while (_active.Count < _forward.Slots)
        {
            GenerationRequest r;
            lock (_lock)
            {
                if (_queue.First == null) break;
                r = _queue.First.Value;
                if (rows + r.Prompt.Length > _forward.MaxRows) break;
                _queue.RemoveFirst();
                _metrics.QueueDepth = _queue.Count;
            }
            IAdapterRuntime? adapter = null;
            try
            {
                if (r.Adapter != null)
                {
                    adapter = _pool.Acquire(r.Adapter);
                    if (adapter == null)
                    {
                        lock (_lock) _queue.AddFirst(r);   // waits until a resident adapter is idle
                        break;
                    }
                }
            }
            catch (Exception e)
            {
                r.Tokens.Writer.TryComplete(e);
                continue;
            }
            // Refused alone, before it joins a batch (a failing step would fail every sequence in it).
            int extra = VirtualTokenRows.ExtraRows(adapter);
            Exception? refusal = adapter?.AttentionPrefix is { Gated: true }
                ? new NotSupportedException($"the adapter '{r.Adapter}' needs a gated attention prefix, which the device kernels do not take yet")
                : r.AdapterScale != 1 && adapter is not GatheredLoraAdapter
                    ? new AdapterScaleException($"'adapter_scale' applies to plain LoRA adapters served by the gathered kernels; '{r.Adapter}' runs its own runtime")
                : r.Prompt.Length + extra >= MaxContext
                    ? new ContextLengthException($"the prompt has {r.Prompt.Length} tokens and the adapter '{r.Adapter}' puts {extra} rows before them; the context holds {MaxContext}")
                    : null;
            bool waits = refusal == null && rows + extra + r.Prompt.Length > _forward.MaxRows;   // its extra rows do not fit this step
            int limit = Math.Min(MaxContext - extra, r.Prompt.Length + r.MaxTokens);
            KvSequence? cache = null;
            if (refusal == null && !waits)
            {
                // Pages for the extra rows, the prompt and every token it may generate (taken as it grows).
                cache = ReservePages(extra + limit, adapter, out refusal);
                waits = cache == null && refusal == null;
            }
            if (waits || refusal != null)
            {
                if (adapter != null) _pool.Release(r.Adapter!);
                if (waits)
                {
                    lock (_lock) _queue.AddFirst(r);
                    break;
                }
                r.Tokens.Writer.TryComplete(refusal);
                continue;
            }
            _active.Add(new Sequence(r, cache!, adapter, extra) { Limit = limit });
            rows += extra + r.Prompt.Length;
        }
    }

    /// <summary>
    /// Reserves the pages of a sequence of <paramref name="tokens"/> tokens within the pool and the memory budget,
    /// evicting idle adapters for room; null when it must wait for running sequences to end, with a refusal when it could
    /// never fit (more pages than the pool or the budget beside its own adapter holds).
    /// </summary>
    private KvSequence? ReservePages(int tokens, IAdapterRuntime? adapter, out Exception? refusal)
    {
        refusal = null;
        int need = _kv.PagesFor(tokens);
        long bytes = need * _kv.PageBytes;
        long own = _pool.BytesOf(adapter);
        if (need > _kv.Pages || bytes + own > MemoryBudget)
        {
            refusal = new ContextLengthException($"a sequence of {tokens} tokens needs {need} KV pages of {_kv.PageSize} tokens ({bytes} bytes); " +
                $"the server holds {_kv.Pages} pages within a {MemoryBudget}-byte memory budget (lower max_tokens)");
            return null;
        }
        if (_pool.ResidentBytes + _kv.ReservedBytes + bytes > MemoryBudget)
            _pool.EvictIdle(_pool.ResidentBytes + _kv.ReservedBytes + bytes - MemoryBudget);
        if (_pool.ResidentBytes + _kv.ReservedBytes + bytes > MemoryBudget) return null;
        return _kv.TryReserve(tokens);
    }

    private void Step()
    {
        // Rows grouped by adapter (the forward needs each adapter's rows contiguous), decoding sequences first in a group.
        var order = _active.GroupBy(s => s.Adapter, ReferenceEqualityComparer.Instance)
            .SelectMany(g => g.OrderBy(s => s.Feed.Length > 1 ? 1 : 0)).ToList();
        var ids = new List<int>();
        var segments = new List<BatchSegment>();
        foreach (var s in order)
        {
            _kv.Grow(s.Cache, s.Position + s.Feed.Length);
            segments.Add(new BatchSegment(s.Cache, ids.Count, s.Feed.Length, s.Position, s.Adapter, s.Request.AdapterScale));
            ids.AddRange(s.Feed);
        }
        var sw = Stopwatch.StartNew();
        var logitsView = _forward.Step(ids.ToArray(), segments);
        int vocab = (int)logitsView.RowElements;
        var all = new float[logitsView.Count];
        logitsView.Download<float>(all);
        _metrics.RecordStep(order.Count, ids.Count, sw.Elapsed.TotalSeconds);
        var logits = new float[vocab];
        for (int i = 0; i < order.Count; i++)
        {
            var s = order[i];
            s.Position += s.Feed.Length;
            Array.Copy(all, (long)i * vocab, logits, 0, vocab);
            int next = Generator.Sample(logits, s.Request.Sampling, s.Rng);
            if (s.Request.StopTokens.Contains(next))
            {
                s.Request.FinishReason = "stop";
                Finish(s, null);
                continue;
            }
            if (s.Generated == 0) _metrics.RecordFirstToken(Stopwatch.GetElapsedTime(s.Request.EnqueuedTicks).TotalSeconds);
            s.Generated++;
            s.Request.Tokens.Writer.TryWrite(next);
            _metrics.AddGenerated(1);
            if (s.Request.Prompt.Length + s.Generated >= s.Limit)
            {
                s.Request.FinishReason = "length";
                Finish(s, null);
                continue;
            }
            s.Feed = [next];
        }
    }

    private void Finish(Sequence s, Exception? error)
    {
        _active.Remove(s);
        _kv.Release(s.Cache);
        if (s.Request.Adapter != null && s.Adapter != null) _pool.Release(s.Request.Adapter);
        s.Request.Tokens.Writer.TryComplete(error);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _signal.Release();
        _thread.Join();
        _stop.Dispose();
        _signal.Dispose();
    }
}
