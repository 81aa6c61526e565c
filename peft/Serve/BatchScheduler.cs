// Continuous batching on one thread that owns the device: requests wait in a bounded queue, join the running batch as
// soon as a slot (and their adapter) is free, have their prompt prefilled in the same step as the other sequences'
// decode rows, and leave the batch when they stop, reach their limit or are cancelled. Tokens go back to each
// request through its own channel; sampling is per request (Generator.Sample with the request's seeded generator).
// A sequence whose adapter adds rows before it (prompt tuning's virtual tokens, prefix tuning's prefix) feeds those P
// rows first in its prefill step, so its KV cache slot holds them once and its tokens sit at positions P… (as generate).
using System.Diagnostics;
using System.Threading.Channels;
using VkPeft.Peft.Engine;

namespace VkPeft.Serve;

/// <summary>The queue is full: the caller should retry later (HTTP 503 with Retry-After).</summary>
public sealed class ServerBusyException(string message) : Exception(message);

/// <summary>The prompt and the adapter's virtual tokens or prefix rows do not fit the context (HTTP 400).</summary>
public sealed class ContextLengthException(string message) : ArgumentException(message);

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
    /// <summary>Generated token ids; completed when the sequence ends (with the error, if it failed).</summary>
    public Channel<int> Tokens { get; } = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    /// <summary>"stop" (a stop token) or "length" (max_tokens or the context), set before Tokens completes.</summary>
    public string FinishReason { get; internal set; } = "length";
    internal long EnqueuedTicks { get; set; }
}

public sealed class BatchScheduler : IDisposable
{
    private sealed class Sequence(GenerationRequest request, int slot, IAdapterRuntime? adapter, int extraRows)
    {
        public GenerationRequest Request { get; } = request;
        public int Slot { get; } = slot;
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
    private readonly Stack<int> _freeSlots;
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    public BatchScheduler(MixedBatchForward forward, AdapterPool pool, ServeMetrics metrics, int maxQueue)
    {
        _forward = forward;
        _pool = pool;
        _metrics = metrics;
        _maxQueue = maxQueue;
        _freeSlots = new Stack<int>(Enumerable.Range(0, forward.Slots).Reverse());
        _thread = new Thread(Run) { IsBackground = true, Name = "vkpeft-serve-scheduler" };
        _thread.Start();
    }

    public int MaxContext => _forward.MaxContext;
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

    /// <summary>Moves queued requests into free slots, in order, while their rows fit this step and their adapter fits the pool.</summary>
    private void Admit()
    {
        int rows = _active.Sum(s => s.Feed.Length);
        while (_freeSlots.Count > 0)
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
                : r.Prompt.Length + extra >= MaxContext
                    ? new ContextLengthException($"the prompt has {r.Prompt.Length} tokens and the adapter '{r.Adapter}' puts {extra} rows before them; the context holds {MaxContext}")
                    : null;
            bool waits = refusal == null && rows + extra + r.Prompt.Length > _forward.MaxRows;   // its extra rows do not fit this step
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
            _active.Add(new Sequence(r, _freeSlots.Pop(), adapter, extra) { Limit = Math.Min(MaxContext - extra, r.Prompt.Length + r.MaxTokens) });
            rows += extra + r.Prompt.Length;
        }
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
            segments.Add(new BatchSegment(s.Slot, ids.Count, s.Feed.Length, s.Position, s.Adapter));
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
        _freeSlots.Push(s.Slot);
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
