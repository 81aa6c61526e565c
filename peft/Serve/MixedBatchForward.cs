// One forward step over many sequences at once, each with its own pages of the paged KV cache, position and adapter: the
// base linears run over all rows together; one paged-attention dispatch serves every sequence, each reading its keys and
// values through its page table (the arithmetic of generation's attention); each adapter's hooks run on the rows of its
// own sequences (rows are grouped by adapter, so a group is one contiguous row range). Rows without an adapter skip
// the hooks. The arithmetic per row is the single-sequence generation path's (DecoderLayer.Forward with a KV cache).
// A sequence whose adapter adds P rows before it (VirtualTokenRows: prompt tuning's virtual tokens, prefix tuning's
// prefix) starts at position 0 with those P rows: their embeddings are the virtual tokens (zeros for a prefix), and for a
// prefix every layer overwrites their keys and values in the sequence's pages with its own — held once, as generate does.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

/// <summary>
/// One sequence's rows in a step: rows [Start, Start+Count) of the batch at positions Position…, its KV pages in Cache,
/// and the factor its request puts on a gathered LoRA adapter's delta (1: as trained).
/// </summary>
public sealed record BatchSegment(KvSequence Cache, int Start, int Count, int Position, IAdapterRuntime? Adapter, float AdapterScale = 1);

/// <summary>The rows [Start, Start+Count) of a step that one adapter (or none) owns.</summary>
public sealed record AdapterRows(IAdapterRuntime? Adapter, int Start, int Count);

/// <summary>
/// The device buffers of a mixed-adapter batch: activations for <see cref="MaxRows"/> rows, the tables that map each
/// sequence of a step to its pages of <see cref="Cache"/>, and logits for up to <see cref="Slots"/> sequences.
/// </summary>
public sealed class MixedBatchForward : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly LayerState _state;
    private readonly DeviceTensor _seqTable, _pageTable;   // [slots, 4] and [slots · pages per sequence] int32
    private PagedBatch _paged = null!;                     // this step's sequences, tables uploaded
    private bool _pooled;                                  // this step has rows of pooled LoRA adapters

    public MixedBatchForward(DeviceLlama model, KvPagePool cache, int slots, int maxContext, int maxRows)
    {
        Model = model;
        Cache = cache;
        Slots = slots;
        MaxContext = maxContext;
        MaxRows = maxRows;
        var c = model.Config;
        var ctx = model.Context;
        using var scope = new TensorScope();
        DeviceTensor T(string name, DType dt, params long[] shape) => scope.Add(DeviceTensor.Create(ctx, name, dt, shape, MemoryCategory.Activations));
        X = T("serve.x", DType.F32, maxRows, c.Dim);
        HFinal = T("serve.h_final", DType.F32, maxRows, c.Dim);
        Ids = T("serve.ids", DType.I32, maxRows);
        Logits = T("serve.logits", DType.F32, slots, c.VocabSize);
        _seqTable = T("serve.kv_seqs", DType.I32, slots, 4);
        _pageTable = T("serve.kv_page_table", DType.I32, (long)slots * cache.PagesFor(maxContext));
        _owned = scope.Keep();
        _state = new LayerState(ctx, c, 1, maxRows, "serve");
    }

    public DeviceLlama Model { get; }
    /// <summary>The paged KV cache the sequences' keys and values live in.</summary>
    public KvPagePool Cache { get; }
    /// <summary>Sequences one step runs at most.</summary>
    public int Slots { get; }
    public int MaxContext { get; }
    public int MaxRows { get; }
    public DeviceTensor X { get; }        // [maxRows, dim] residual stream
    public DeviceTensor HFinal { get; }   // [maxRows, dim] final-normed hidden state
    public DeviceTensor Ids { get; }      // [maxRows] int32
    public DeviceTensor Logits { get; }   // [slots, vocab] one row per sequence of the step, in segment order
    /// <summary>Plain-LoRA adapters applied by gathered kernels (rows whose adapter is a <see cref="GatheredLoraAdapter"/>).</summary>
    public GatheredLoraPool? LoraPool { get; init; }

    /// <summary>Device bytes of the KV cache pool (all pages).</summary>
    public long KvCacheBytes => Cache.Pages * Cache.PageBytes;

    /// <summary>
    /// Runs <paramref name="ids"/> (the rows of every segment, in order) through the model and writes the logits of
    /// each segment's last row into Logits[i] for segment i. Segments must be sorted so that rows of one adapter are
    /// contiguous, and together cover rows [0, ids.Length).
    /// </summary>
    public DeviceTensor Step(ReadOnlySpan<int> ids, IReadOnlyList<BatchSegment> segments)
    {
        int rows = ids.Length;
        Check(rows, segments);
        Ids.RowsView(0, rows).Upload<int>(ids);
        var x = X.RowsView(0, rows);
        Model.EmbedTokens(Ids.RowsView(0, rows), x);
        foreach (var seg in segments) WriteExtraRows(seg, x);
        _paged = PagedAttention.Upload([.. segments.Select(s => KvPagePool.Attend(s.Cache, s.Start, s.Count, s.Position))], Cache.PageSize, _seqTable, _pageTable);
        var groups = Groups(segments);
        foreach (var gr in groups) gr.Adapter?.AttachBase(Model);   // DoRA's base row norms (once per adapter and model)
        _pooled = LoraPool?.SetRows(segments, rows) ?? false;
        for (int l = 0; l < Model.Layers.Length; l++) Layer(l, x, rows, segments, groups);
        Norm(-1, LlamaTensorKind.FinalNorm, Model.FinalNorm, x, HFinal.RowsView(0, rows), groups);
        // Consecutive one-row segments (decoding sequences) share one classifier call.
        for (int i = 0; i < segments.Count;)
        {
            int j = i + 1;
            while (j < segments.Count && segments[j].Count == 1 && segments[i].Count == 1 && segments[j].Start == segments[j - 1].Start + 1) j++;
            int last = segments[i].Start + segments[i].Count - 1;
            Model.Classifier.Forward(HFinal.RowsView(last, j - i), Logits.RowsView(i, j - i));
            i = j;
        }
        return Logits.RowsView(0, segments.Count);
    }

    /// <summary>P rows the segment's adapter puts first in its prefill (position 0), else 0.</summary>
    private static int ExtraRowsOf(BatchSegment seg) => seg.Position == 0 ? VirtualTokenRows.ExtraRows(seg.Adapter) : 0;

    /// <summary>The embeddings of a prefilling segment's extra rows: the virtual tokens, or zeros under a prefix (as LlamaRunner).</summary>
    private static void WriteExtraRows(BatchSegment seg, DeviceTensor x)
    {
        int p = ExtraRowsOf(seg);
        if (p == 0) return;
        var rows = x.RowsView(seg.Start, p);
        if (seg.Adapter!.InputEmbedding is { } prompt) BasicOps.Copy(prompt.Embeddings, rows);
        else BasicOps.Fill(rows, 0);
    }

    private void Check(int rows, IReadOnlyList<BatchSegment> segments)
    {
        if (rows > MaxRows) throw new ArgumentException($"{rows} rows exceed the step's {MaxRows}");
        if (segments.Count > Slots) throw new ArgumentException($"{segments.Count} sequences exceed the {Slots} slots");
        int next = 0;
        foreach (var s in segments)
        {
            if (s.Start != next || s.Count <= 0) throw new ArgumentException("segments must cover the rows in order");
            if ((long)s.Cache.Pages.Count * Cache.PageSize < s.Position + s.Count)
                throw new ArgumentException($"a sequence of {s.Position + s.Count} tokens holds only {s.Cache.Pages.Count} pages of {Cache.PageSize}");
            if (s.Position + s.Count > MaxContext) throw new ArgumentException($"sequence of {s.Position + s.Count} tokens exceeds the {MaxContext}-token context");
            if (s.Position == 0 && s.Count <= VirtualTokenRows.ExtraRows(s.Adapter))
                throw new ArgumentException($"a prefill needs its adapter's {VirtualTokenRows.ExtraRows(s.Adapter)} extra rows and at least one token");
            next += s.Count;
        }
        if (next != rows) throw new ArgumentException("segments must cover every row");
    }

    /// <summary>Runs of segments with the same adapter: (adapter, first row, row count).</summary>
    private static List<AdapterRows> Groups(IReadOnlyList<BatchSegment> segments)
    {
        var groups = new List<AdapterRows>();
        var seen = new HashSet<IAdapterRuntime?>(ReferenceEqualityComparer.Instance);
        foreach (var s in segments)
        {
            if (groups.Count > 0 && ReferenceEquals(groups[^1].Adapter, s.Adapter))
            {
                groups[^1] = groups[^1] with { Count = groups[^1].Count + s.Count };
                continue;
            }
            if (!seen.Add(s.Adapter)) throw new ArgumentException("segments of one adapter must be contiguous");
            groups.Add(new AdapterRows(s.Adapter, s.Start, s.Count));
        }
        return groups;
    }

    private void Layer(int l, DeviceTensor x, int rows, IReadOnlyList<BatchSegment> segments, List<AdapterRows> groups)
    {
        var c = Model.Config;
        var layer = Model.Layers[l];
        var s = _state;
        DeviceTensor R(DeviceTensor t) => LayerState.Rows(t, rows);
        var (h1, q, k, v, o, h2, g, u, sw, z) = (R(s.H1), R(s.Q), R(s.K), R(s.V), R(s.O), R(s.H2), R(s.G), R(s.U), R(s.S), R(s.Z));
        foreach (var gr in groups)
            if (gr.Adapter?.AttentionPrefix is { Gated: true })
                throw new NotSupportedException("a gated attention prefix needs its own softmax in the attention kernel, which the device runtime does not have yet");

        Norm(l, LlamaTensorKind.AttnNorm, layer.AttnNorm, x, h1, groups);
        Linear(l, TargetModule.Q, layer.Wq, h1, q, layer.Bq, groups);
        Linear(l, TargetModule.K, layer.Wk, h1, k, layer.Bk, groups);
        Linear(l, TargetModule.V, layer.Wv, h1, v, layer.Bv, groups);
        var (kPool, vPool) = (Cache.K[l], Cache.V[l]);
        foreach (var seg in segments)
        {
            var qs = q.RowsView(seg.Start, seg.Count);
            Rope.Apply(qs, qs, Model.InvFreq, c.HeadDim, Model.Pairing, seg.Position, seg.Count);
            // Keys go into the sequence's pages rotated, values as they are: one run per page the rows touch.
            foreach (var (pos, row, n) in Cache.Runs(seg.Cache, seg.Position, seg.Count))
            {
                int r = seg.Start + pos - seg.Position;
                Rope.Apply(k.RowsView(r, n), kPool.RowsView(row, n), Model.InvFreq, c.HeadDim, Model.Pairing, pos, n);
                BasicOps.Copy(v.RowsView(r, n), vPool.RowsView(row, n));
            }
            // A prefix replaces its rows' keys (never rotated) and values, as AttentionPrefixRows.Write does in generate.
            if (seg.Adapter?.AttentionPrefix is { Gated: false } prefix && ExtraRowsOf(seg) > 0)
            {
                var (pk, pv, _) = prefix.Prefix(l);
                var (keys, values) = (pk.Reshape(prefix.PrefixLength, c.KvDim), pv.Reshape(prefix.PrefixLength, c.KvDim));   // [P, kv_dim]
                foreach (var (pos, row, n) in Cache.Runs(seg.Cache, 0, prefix.PrefixLength))
                {
                    BasicOps.Copy(keys.RowsView(pos, n), kPool.RowsView(row, n));
                    BasicOps.Copy(values.RowsView(pos, n), vPool.RowsView(row, n));
                }
            }
        }
        var lse = s.Lse.Reshape(s.Lse.Count).RowsView(0, (long)rows * c.NHeads);   // [rows, heads] scratch
        PagedAttention.Forward(q, kPool, vPool, o, lse, _paged, c.NHeads, c.NKvHeads, c.HeadDim);
        // LLaMA-Adapter rows: the o-projection reads o plus the gated prompt attention (the hook's buffer, copied into o).
        foreach (var gr in groups)
            if (gr.Adapter?.AdaptionPrompt is { } prompt)
            {
                var og = o.RowsView(gr.Start, gr.Count);
                var withPrompt = prompt.Forward(layer, l, q.RowsView(gr.Start, gr.Count), og);
                if (!ReferenceEquals(withPrompt, og)) BasicOps.Copy(withPrompt, og);
            }
        Residual(l, TargetModule.O, layer.Wo, layer.Bo, o, z, x, groups, (gr, zg) => gr.Adapter?.AttentionOutput(l, zg));
        Norm(l, LlamaTensorKind.FfnNorm, layer.FfnNorm, x, h2, groups);
        Linear(l, TargetModule.Gate, layer.Gate, h2, g, layer.BGate, groups);
        Linear(l, TargetModule.Up, layer.Up, h2, u, layer.BUp, groups);
        SwiGlu.Forward(g, u, sw);
        Residual(l, TargetModule.Down, layer.Down, layer.BDown, sw, z, x, groups, (gr, zg) => gr.Adapter?.MlpOutput(l, h2.RowsView(gr.Start, gr.Count), zg));
    }

    /// <summary>
    /// x += block(input) for the linear closing a block (o or down): rows whose adapter only adds to that linear's output
    /// accumulate straight into the residual stream (beta = 1), the others go through z, the adapter's block hook and an
    /// add — the same rule as DecoderLayer.Forward, applied per adapter so every row rounds as it would alone.
    /// </summary>
    private void Residual(int l, TargetModule t, DeviceLinear w, DeviceTensor? bias, DeviceTensor input, DeviceTensor z, DeviceTensor x, List<AdapterRows> groups,
        Action<AdapterRows, DeviceTensor> blockHook)
    {
        bool Fused(AdapterRows gr) => gr.Adapter is not ITrainableAdapter { HasBlockHooks: true }
            && gr.Adapter?.TransformsLinearOutput(TargetModule.O) != true && gr.Adapter?.TransformsLinearOutput(TargetModule.Down) != true;
        if (groups.All(Fused))
        {
            Linear(l, t, w, input, x, bias, groups, beta: 1);
            return;
        }
        if (!groups.Any(Fused))
        {
            Linear(l, t, w, input, z, bias, groups);
            foreach (var gr in groups) blockHook(gr, z.RowsView(gr.Start, gr.Count));
            BasicOps.Add(x, z, x);
            return;
        }
        foreach (var gr in groups)
        {
            var one = new List<AdapterRows> { gr with { Start = 0 } };
            _firstRow = gr.Start;
            var (ig, xg, zg) = (input.RowsView(gr.Start, gr.Count), x.RowsView(gr.Start, gr.Count), z.RowsView(gr.Start, gr.Count));
            if (Fused(gr))
            {
                Linear(l, t, w, ig, xg, bias, one, beta: 1);
                continue;
            }
            Linear(l, t, w, ig, zg, bias, one);
            blockHook(gr, zg);
            BasicOps.Add(xg, zg, xg);
        }
        _firstRow = 0;
    }

    /// <summary>
    /// y = RMSNorm(x) with each group's weight for this norm (norm tuning's, else the base's <paramref name="baseWeight"/>):
    /// once over all rows when every group uses the base weight, else per group.
    /// </summary>
    private void Norm(int l, LlamaTensorKind kind, DeviceTensor baseWeight, DeviceTensor x, DeviceTensor y, List<AdapterRows> groups)
    {
        float eps = (float)Model.Config.RmsNormEps;
        var weights = groups.Select(gr => DecoderLayer.NormWeight(gr.Adapter, l, kind, baseWeight)).ToList();
        if (weights.All(w => ReferenceEquals(w, baseWeight)))
        {
            RmsNorm.Forward(x, baseWeight, y, eps);
            return;
        }
        for (int i = 0; i < groups.Count; i++)
            RmsNorm.Forward(x.RowsView(groups[i].Start, groups[i].Count), weights[i], y.RowsView(groups[i].Start, groups[i].Count), eps);
    }

    private int _firstRow;   // the step row that row 0 of Linear's x and y is (per-group calls)

    /// <summary>
    /// y (+)= x·Wᵀ (+ b) for every row, then each group's adapter hook on its rows. The base runs once over all rows
    /// unless an adapter of the batch transforms this linear's input; then it runs per group on that group's input.
    /// </summary>
    private void Linear(int l, TargetModule t, DeviceLinear w, DeviceTensor x, DeviceTensor y, DeviceTensor? bias,
        List<AdapterRows> groups, float beta = 0)
    {
        if (groups.Any(gr => gr.Adapter?.TransformsLinearInput(t) == true))
        {
            foreach (var gr in groups)
            {
                var xg = x.RowsView(gr.Start, gr.Count);
                w.Forward(gr.Adapter?.LinearInput(l, t, xg) ?? xg, y.RowsView(gr.Start, gr.Count), beta: beta);
            }
        }
        else w.Forward(x, y, beta: beta);
        if (bias != null) Bias.Add(y, bias);
        foreach (var gr in groups) gr.Adapter?.Linear(l, t, x.RowsView(gr.Start, gr.Count), y.RowsView(gr.Start, gr.Count));
        if (_pooled && groups.Any(gr => gr.Adapter is GatheredLoraAdapter)) LoraPool!.Apply(l, t, x, y, _firstRow);
    }

    public void Dispose()
    {
        _state.Dispose();
        foreach (var t in _owned) t.Dispose();
    }
}
