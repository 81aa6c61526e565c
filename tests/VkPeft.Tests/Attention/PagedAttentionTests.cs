// GPU-vs-CPU tests of attention over a paged KV cache (attention_paged.comp): several sequences of one step with
// scattered pages, lengths and start positions that are not multiples of the page size or the workgroup (8), page
// boundaries crossed inside a step, GQA, key ranges split over chained dispatches, guard regions around o and lse and
// rows no sequence names left untouched; and bit-equality with the contiguous-cache kernel the generation path runs.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;

namespace VkPeft.Tests.Attention;

[Collection("gpu")]
public sealed class PagedAttentionTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    /// <summary>(rows, start position) per sequence: a decode row, prefills crossing pages, a long cached prefix.</summary>
    private static readonly (int Rows, int Start)[] Sequences = [(1, 0), (13, 0), (1, 37), (9, 22), (21, 5), (1, 70)];

    public static TheoryData<int, int, int, int, int> Cases => new()
    {
        // page size, nHeads, nKvHeads, headDim, keys per dispatch (0: the device's)
        { 16, 4, 2, 8, 0 }, { 5, 6, 2, 48, 0 }, { 7, 2, 2, 16, 11 }, { 32, 8, 1, 64, 0 }, { 1, 4, 4, 8, 0 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheReferenceThroughScatteredPages(int pageSize, int nHeads, int nKvHeads, int headDim, int keysPerDispatch)
    {
        int ldq = nHeads * headDim, ldk = nKvHeads * headDim;
        var (seqs, poolPages) = Layout(pageSize, 3);
        int rows = seqs.Max(s => s.FirstRow + s.Rows) + 2;   // two trailing rows no sequence names
        var q = TestData.Normal(rows * ldq, 41 + headDim, 1.5f);
        var k = TestData.Normal(poolPages * pageSize * ldk, 42, 1.5f);
        var v = TestData.Normal(poolPages * pageSize * ldk, 43);

        var (o, lse) = RunPaged(seqs, pageSize, poolPages, q, k, v, rows, nHeads, nKvHeads, headDim, keysPerDispatch);

        static double[] D(float[] a) => [.. a.Select(x => (double)x)];
        var (qd, kd, vd) = (D(q), D(k), D(v));
        var named = new bool[rows];
        foreach (var s in seqs)
        {
            var qs = qd.AsSpan(s.FirstRow * ldq, s.Rows * ldq);
            var (eo, eLse) = PagedAttentionReference.Forward(qs, kd, vd, s.Pages, s.Rows, s.StartPos, pageSize, nHeads, nKvHeads, headDim);
            // The contiguous kernel's stated bounds apply unchanged: the page table only moves where a key is read from.
            var shape = new AttentionShape(1, s.Rows, s.StartPos, nHeads, nKvHeads, headDim, s.Keys);
            var tol = AttentionTolerances.For(shape, qs.ToArray(), PagedAttentionReference.Gather(kd, s.Pages, s.Keys, pageSize, ldk),
                PagedAttentionReference.Gather(vd, s.Pages, s.Keys, pageSize, ldk), new double[shape.QCount]);
            for (int e = 0; e < eo.Length; e++)
            {
                double err = Math.Abs(o[s.FirstRow * ldq + e] - eo[e]);
                Assert.True(err <= tol.O[e], $"page {pageSize}, sequence at row {s.FirstRow} ({s.Rows} rows from {s.StartPos}): o[{e}] = {o[s.FirstRow * ldq + e]}, reference {eo[e]}, |error| {err:G3} > {tol.O[e]:G3}");
            }
            for (int i = 0; i < s.Rows; i++)
                for (int h = 0; h < nHeads; h++)
                {
                    double err = Math.Abs(lse[(s.FirstRow + i) * nHeads + h] - eLse[i * nHeads + h]);
                    double bound = tol.Lse[h * s.Rows + i];
                    Assert.True(err <= bound, $"page {pageSize}: lse of row {s.FirstRow + i} head {h} errs by {err:G3} > {bound:G3}");
                }
            for (int i = 0; i < s.Rows; i++) named[s.FirstRow + i] = true;
        }
        for (int r = 0; r < rows; r++)
            if (!named[r])
                for (int e = 0; e < ldq; e++) Assert.True(o[r * ldq + e] == Guarded.Sentinel, $"row {r} belongs to no sequence but o[{r},{e}] was written");
    }

    /// <summary>
    /// A sequence served from scattered pages gets the same bits as from one contiguous cache through the direct
    /// kernel generation uses (same blocks, same fma order), so served greedy text equals `generate` token for token.
    /// </summary>
    [Theory]
    [InlineData(16, 23, 0)]
    [InlineData(5, 1, 31)]
    [InlineData(7, 12, 9)]
    public void EqualsTheContiguousKernelBitForBit(int pageSize, int rowsInStep, int startPos)
    {
        const int nHeads = 4, nKvHeads = 2, headDim = 16;
        int ldq = nHeads * headDim, ldk = nKvHeads * headDim, keys = startPos + rowsInStep;
        int pagesUsed = (keys + pageSize - 1) / pageSize, poolPages = pagesUsed * 2 + 1;
        var pages = Enumerable.Range(0, pagesUsed).Select(p => poolPages - 1 - 2 * p).ToArray();   // scattered (every other page, backwards)
        var q = TestData.Normal(rowsInStep * ldq, 71, 1.5f);
        var contiguousK = TestData.Normal(keys * ldk, 72, 1.5f);
        var contiguousV = TestData.Normal(keys * ldk, 73);
        var k = new float[poolPages * pageSize * ldk];
        var v = new float[k.Length];
        for (int j = 0; j < keys; j++)
        {
            int at = (pages[j / pageSize] * pageSize + j % pageSize) * ldk;
            Array.Copy(contiguousK, j * ldk, k, at, ldk);
            Array.Copy(contiguousV, j * ldk, v, at, ldk);
        }
        var seqs = new[] { new PagedSequence(0, rowsInStep, startPos, pages) };
        var (paged, _) = RunPaged(seqs, pageSize, poolPages, q, k, v, rowsInStep, nHeads, nKvHeads, headDim, 0);

        using var tq = DeviceTensor.Create(Ctx, "q", DType.F32, [rowsInStep, ldq], MemoryCategory.Workspace);
        using var tk = DeviceTensor.Create(Ctx, "k", DType.F32, [keys, ldk], MemoryCategory.Workspace);
        using var tv = DeviceTensor.Create(Ctx, "v", DType.F32, [keys, ldk], MemoryCategory.Workspace);
        using var to = DeviceTensor.Create(Ctx, "o", DType.F32, [rowsInStep, ldq], MemoryCategory.Workspace);
        using var tl = DeviceTensor.Create(Ctx, "lse", DType.F32, [1, nHeads, rowsInStep], MemoryCategory.Workspace);
        tq.Upload<float>(q);
        tk.Upload<float>(contiguousK);
        tv.Upload<float>(contiguousV);
        AttentionKernel.Forward(tq, tk, tv, to, tl, 1, rowsInStep, startPos, nHeads, nKvHeads, headDim, AttentionAlgorithm.Direct);
        var contiguous = to.ToArray<float>();
        for (int e = 0; e < contiguous.Length; e++)
            Assert.True(BitConverter.SingleToInt32Bits(paged[e]) == BitConverter.SingleToInt32Bits(contiguous[e]),
                $"page {pageSize}: o[{e}] = {paged[e]:R} paged, {contiguous[e]:R} contiguous");
    }

    [Fact]
    public void TablesThatDoNotCoverTheKeysAreRefused()
    {
        using var seqTable = DeviceTensor.Create(Ctx, "seqs", DType.I32, [8], MemoryCategory.Workspace);
        using var pageTable = DeviceTensor.Create(Ctx, "pages", DType.I32, [8], MemoryCategory.Workspace);
        // 3 pages of 4 keys cannot hold 13 keys.
        Assert.Throws<ArgumentException>(() => PagedAttention.Upload([new PagedSequence(0, 3, 10, [0, 1, 2])], 4, seqTable, pageTable));
        // A page past the pool's end is refused before any dispatch.
        var batch = PagedAttention.Upload([new PagedSequence(0, 2, 0, [5])], 4, seqTable, pageTable);
        using var q = DeviceTensor.Create(Ctx, "q", DType.F32, [2, 8], MemoryCategory.Workspace);
        using var pool = DeviceTensor.Create(Ctx, "pool", DType.F32, [4 * 4, 8], MemoryCategory.Workspace);
        using var lse = DeviceTensor.Create(Ctx, "lse", DType.F32, [2, 1], MemoryCategory.Workspace);
        Assert.Throws<ArgumentException>(() => PagedAttention.Forward(q, pool, pool, q, lse, batch, 1, 1, 8));
    }

    /// <summary>
    /// The test's sequences, rows laid out one after another (a gap row between some), each with its own pages drawn
    /// from a shuffled pool; the pool holds <paramref name="spare"/> pages no sequence uses.
    /// </summary>
    private static (PagedSequence[] Seqs, int PoolPages) Layout(int pageSize, int spare)
    {
        int total = Sequences.Sum(s => (s.Rows + s.Start + pageSize - 1) / pageSize) + spare;
        var order = Enumerable.Range(0, total).OrderBy(p => (p * 7919 + 13) % 104729).ToArray();   // a fixed shuffle
        var seqs = new List<PagedSequence>();
        int row = 0, next = 0;
        for (int i = 0; i < Sequences.Length; i++)
        {
            var (n, start) = Sequences[i];
            int count = (n + start + pageSize - 1) / pageSize;
            seqs.Add(new PagedSequence(row, n, start, order[next..(next + count)]));
            next += count;
            row += n + (i % 2);   // every other sequence leaves a row unnamed after it
        }
        return ([.. seqs], total);
    }

    private (float[] O, float[] Lse) RunPaged(PagedSequence[] seqs, int pageSize, int poolPages, float[] q, float[] k, float[] v,
        int rows, int nHeads, int nKvHeads, int headDim, int keysPerDispatch)
    {
        int ldq = nHeads * headDim, ldk = nKvHeads * headDim;
        using var tq = DeviceTensor.Create(Ctx, "q", DType.F32, [rows, ldq], MemoryCategory.Workspace);
        using var tk = DeviceTensor.Create(Ctx, "k_pool", DType.F32, [poolPages * pageSize, ldk], MemoryCategory.Workspace);
        using var tv = DeviceTensor.Create(Ctx, "v_pool", DType.F32, [poolPages * pageSize, ldk], MemoryCategory.Workspace);
        using var seqTable = DeviceTensor.Create(Ctx, "seqs", DType.I32, [seqs.Length * 4], MemoryCategory.Workspace);
        using var pageTable = DeviceTensor.Create(Ctx, "pages", DType.I32, [PagedAttention.PageTableLength(seqs)], MemoryCategory.Workspace);
        using var o = Guarded.Create(Ctx, "o", rows, ldq);
        using var lse = Guarded.Create(Ctx, "lse", rows, nHeads);
        tq.Upload<float>(q);
        tk.Upload<float>(k);
        tv.Upload<float>(v);
        var batch = PagedAttention.Upload(seqs, pageSize, seqTable, pageTable);
        PagedAttention.Forward(tq, tk, tv, o.Tensor, lse.Tensor, batch, nHeads, nKvHeads, headDim, keysPerDispatch);
        return (o.Download(), lse.Download());
    }
}
