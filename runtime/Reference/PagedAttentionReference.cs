// float64 reference for attention over a paged KV cache (what attention_paged must compute): each sequence's keys and
// values are gathered from the pools through its page table into one contiguous cache, then attended as
// AttentionReference does for one sequence at its start position.
namespace VkPeft.Runtime.Reference;

public static class PagedAttentionReference
{
    /// <summary>Rows 0..keys−1 of one sequence's cache, gathered from <paramref name="pool"/> [pages·pageSize, ldk].</summary>
    public static double[] Gather(ReadOnlySpan<double> pool, IReadOnlyList<int> pages, int keys, int pageSize, int ldk)
    {
        var rows = new double[(long)keys * ldk];
        for (int j = 0; j < keys; j++)
            pool.Slice((pages[j / pageSize] * pageSize + j % pageSize) * ldk, ldk).CopyTo(rows.AsSpan(j * ldk, ldk));
        return rows;
    }

    /// <summary>
    /// o [rows, nHeads·hd] and lse [rows, nHeads] of one sequence whose queries are <paramref name="q"/> [rows, nHeads·hd]
    /// at positions startPos…, keys and values from the pools through <paramref name="pages"/>.
    /// </summary>
    public static (double[] O, double[] Lse) Forward(ReadOnlySpan<double> q, ReadOnlySpan<double> kPool, ReadOnlySpan<double> vPool,
        IReadOnlyList<int> pages, int rows, int startPos, int pageSize, int nHeads, int nKvHeads, int headDim)
    {
        int keys = startPos + rows, ldk = nKvHeads * headDim;
        var shape = new AttentionShape(1, rows, startPos, nHeads, nKvHeads, headDim, keys);
        var (o, lseHeadMajor) = AttentionReference.Forward(q, Gather(kPool, pages, keys, pageSize, ldk), Gather(vPool, pages, keys, pageSize, ldk), shape);
        var lse = new double[rows * nHeads];   // [nHeads, rows] -> [rows, nHeads]
        for (int h = 0; h < nHeads; h++)
            for (int i = 0; i < rows; i++)
                lse[i * nHeads + h] = lseHeadMajor[h * rows + i];
        return (o, lse);
    }
}
