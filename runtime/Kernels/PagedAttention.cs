// Causal grouped-query attention over a paged KV cache (serving): the keys and values of every sequence sit in fixed-size
// pages of one pool per layer, found through the sequence's page table, and one dispatch serves every sequence of a
// step. The arithmetic per query row is Attention.Forward's direct kernel (shader attention_paged).
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// One sequence of a paged attention call: query rows [FirstRow, FirstRow+Rows) of the step at positions
/// StartPos…StartPos+Rows−1; its logical key j lives in pool row Pages[j / pageSize]·pageSize + j % pageSize.
/// </summary>
public sealed record PagedSequence(int FirstRow, int Rows, int StartPos, int[] Pages)
{
    public int Keys => StartPos + Rows;
}

/// <summary>The sequences of one step with their tables already on the device (<see cref="PagedAttention.Upload"/>).</summary>
public sealed record PagedBatch(IReadOnlyList<PagedSequence> Sequences, int PageSize, DeviceTensor SeqTable, DeviceTensor PageTable)
{
    public int MaxRows => Sequences.Count == 0 ? 0 : Sequences.Max(s => s.Rows);
    public int MaxKeys => Sequences.Count == 0 ? 0 : Sequences.Max(s => s.Keys);
}

public static class PagedAttention
{
    private static readonly ShaderId[] Shaders =
        [ShaderId.AttentionPagedD8, ShaderId.AttentionPagedD16, ShaderId.AttentionPagedD32, ShaderId.AttentionPagedD48, ShaderId.AttentionPagedD64, ShaderId.AttentionPagedD96, ShaderId.AttentionPagedD128];

    /// <summary>Mirrors the push block of attention_paged.comp.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint NHeads, Group, Ldq, Ldk;
        public float Scale;
        public uint HeadDim, PageSize, Lo, Hi, Accumulate;
        public uint OffQ, OffK, OffV, OffO, OffLse, OffSeq, OffPage;
    }

    /// <summary>Elements of the page tables of <paramref name="sequences"/> (the size <see cref="Upload"/> needs).</summary>
    public static int PageTableLength(IEnumerable<PagedSequence> sequences) => sequences.Sum(s => s.Pages.Length);

    /// <summary>
    /// Writes the sequences' table (first row, rows, start position, page-table offset) into <paramref name="seqTable"/>
    /// (int32, at least 4 per sequence) and their page tables, one after another, into <paramref name="pageTable"/>
    /// (int32), after checking that every sequence's pages cover its keys.
    /// </summary>
    public static PagedBatch Upload(IReadOnlyList<PagedSequence> sequences, int pageSize, DeviceTensor seqTable, DeviceTensor pageTable)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        OpChecks.RequireI32(seqTable);
        OpChecks.RequireI32(pageTable);
        if (pageSize <= 0) throw new ArgumentException($"paged attention: page size {pageSize} must be positive");
        var seqs = new int[sequences.Count * 4];
        var pages = new int[Math.Max(PageTableLength(sequences), 1)];
        int next = 0;
        for (int i = 0; i < sequences.Count; i++)
        {
            var s = sequences[i];
            if (s.FirstRow < 0 || s.Rows <= 0 || s.StartPos < 0)
                throw new ArgumentException($"paged attention: sequence {i} has first row {s.FirstRow}, {s.Rows} rows, start {s.StartPos}");
            if ((long)s.Pages.Length * pageSize < s.Keys)
                throw new ArgumentException($"paged attention: sequence {i} has {s.Pages.Length} pages of {pageSize} keys for {s.Keys} keys");
            if (s.Pages.Any(p => p < 0)) throw new ArgumentException($"paged attention: sequence {i} names a negative page");
            (seqs[4 * i], seqs[4 * i + 1], seqs[4 * i + 2], seqs[4 * i + 3]) = (s.FirstRow, s.Rows, s.StartPos, next);
            s.Pages.CopyTo(pages, next);
            next += s.Pages.Length;
        }
        if (seqTable.Count < seqs.Length) throw new ArgumentException($"paged attention: '{seqTable.Name}' {seqTable.ShapeString} holds fewer than the {seqs.Length} entries of {sequences.Count} sequences");
        if (pageTable.Count < pages.Length) throw new ArgumentException($"paged attention: '{pageTable.Name}' {pageTable.ShapeString} holds fewer than the {pages.Length} pages named");
        var seqView = seqTable.Reshape(seqTable.Count).RowsView(0, Math.Max(seqs.Length, 1));
        var pageView = pageTable.Reshape(pageTable.Count).RowsView(0, pages.Length);
        if (seqs.Length > 0) seqView.Upload<int>(seqs);
        pageView.Upload<int>(pages);
        return new PagedBatch([.. sequences], pageSize, seqView, pageView);
    }

    /// <summary>
    /// o = softmax(q·kᵀ/√headDim + causal mask)·v for every sequence of <paramref name="batch"/>, keys and values read from
    /// the pools through its page table. q and o [rows, nHeads·headDim] (rows of the step; rows no sequence names are
    /// not written); kPool and vPool [pages·pageSize, nKvHeads·headDim]; lse [rows, nHeads] receives log Σ exp(scores).
    /// Keys run in dispatches of at most <paramref name="keysPerDispatch"/> (0: as many as the device allows; CPU devices
    /// limit them), merged with an exact log-sum-exp combine.
    /// </summary>
    public static void Forward(DeviceTensor q, DeviceTensor kPool, DeviceTensor vPool, DeviceTensor o, DeviceTensor lse, PagedBatch batch,
        int nHeads, int nKvHeads, int headDim, int keysPerDispatch = 0)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(keysPerDispatch);
        BasicOps.RequireF32(q, kPool, vPool, o, lse);
        if (nHeads <= 0 || nKvHeads <= 0 || nHeads % nKvHeads != 0)
            throw new ArgumentException($"paged attention: nHeads ({nHeads}) must be a positive multiple of nKvHeads ({nKvHeads})");
        if (headDim <= 0 || headDim > Attention.MaxHeadDim)
            throw new ArgumentException($"paged attention: headDim {headDim} is outside the supported 1..{Attention.MaxHeadDim}");
        long ldq = (long)nHeads * headDim, ldk = (long)nKvHeads * headDim, rows = q.Count / ldq;
        if (q.Count % ldq != 0) throw new ArgumentException($"paged attention: q '{q.Name}' {q.ShapeString} is not rows of nHeads·headDim = {ldq}");
        OpChecks.RequireSameCount(q, o, "paged attention (o like q)");
        OpChecks.RequireSameCount(kPool, vPool, "paged attention (v pool like k pool)");
        OpChecks.RequireCount(lse, rows * nHeads, "paged attention (lse [rows, nHeads])");
        long poolRows = kPool.Count / ldk;
        if (kPool.Count % (ldk * batch.PageSize) != 0)
            throw new ArgumentException($"paged attention: the k pool '{kPool.Name}' {kPool.ShapeString} is not whole pages of {batch.PageSize} rows of {ldk}");
        foreach (var s in batch.Sequences)
        {
            if (s.FirstRow + s.Rows > rows) throw new ArgumentException($"paged attention: a sequence's rows [{s.FirstRow}, {s.FirstRow + s.Rows}) exceed q's {rows}");
            int used = (s.Keys + batch.PageSize - 1) / batch.PageSize;
            for (int p = 0; p < used; p++)
                if ((long)(s.Pages[p] + 1) * batch.PageSize > poolRows)
                    throw new ArgumentException($"paged attention: page {s.Pages[p]} is outside the pool's {poolRows / batch.PageSize} pages");
        }
        if (batch.Sequences.Count == 0) return;
        if (kPool.Count > uint.MaxValue || q.Count > uint.MaxValue) throw new ArgumentException("paged attention: tensors over 2³² elements are not supported");

        var ctx = q.Context;
        var ops = new[] { q, kPool, vPool, o, lse, batch.SeqTable, batch.PageTable }.Select(OpChecks.Whole).ToArray();
        var push = new Push
        {
            NHeads = (uint)nHeads, Group = (uint)(nHeads / nKvHeads), Ldq = (uint)ldq, Ldk = (uint)ldk, Scale = (float)(1.0 / Math.Sqrt(headDim)),
            HeadDim = (uint)headDim, PageSize = (uint)batch.PageSize,
            OffQ = ops[0].Offset, OffK = ops[1].Offset, OffV = ops[2].Offset, OffO = ops[3].Offset, OffLse = ops[4].Offset, OffSeq = ops[5].Offset, OffPage = ops[6].Offset,
        };
        int variant = 0;
        while (Attention.HeadDims[variant] < headDim) variant++;
        var pipeline = ctx.Pipelines.Get(Shaders[variant], Attention.DirectWorkgroupSize);
        long groupsX = (batch.MaxRows + Attention.DirectWorkgroupSize - 1) / Attention.DirectWorkgroupSize;
        var max = ctx.Caps.MaxComputeWorkGroupCount;
        if (groupsX > max[0] || nHeads > max[1] || batch.Sequences.Count > max[2])
            throw new ArgumentException($"paged attention: {groupsX}x{nHeads}x{batch.Sequences.Count} workgroups exceed the device limit {string.Join("x", max)}");
        long keys = batch.MaxKeys, chunk = KeysPerDispatch(ctx, headDim, keysPerDispatch);
        for (long k0 = 0; k0 < keys; k0 += chunk)
        {
            push.Lo = (uint)k0; push.Hi = (uint)Math.Min(keys, k0 + chunk); push.Accumulate = k0 == 0 ? 0u : 1u;
            var access = k0 == 0 ? Access.Write : Access.ReadWrite;
            ctx.Commands.Dispatch(pipeline,
                [Binding.Read(ops[0].Range), Binding.Read(ops[1].Range), Binding.Read(ops[2].Range), new Binding(ops[3].Range, access), new Binding(ops[4].Range, access),
                 Binding.Read(ops[5].Range), Binding.Read(ops[6].Range)],
                push, (uint)groupsX, (uint)nHeads, (uint)batch.Sequences.Count, "attention.paged");
        }
    }

    /// <summary>
    /// Keys one dispatch loops over: on CPU devices bounded by lavapipe's loop limit (Attention.LoopBudget; per key the
    /// dot and update loops, the rescale share and one page-table lookup), elsewhere unbounded; capped by a request.
    /// </summary>
    private static long KeysPerDispatch(VulkanContext ctx, int headDim, int requested)
    {
        long n = ctx.Caps.Kind == DeviceKind.Cpu ? Math.Max((Attention.LoopBudget - 4L * headDim) / (2L * headDim + headDim / 4 + 5), 1) : long.MaxValue;
        return requested > 0 ? Math.Min(n, requested) : n;
    }
}
