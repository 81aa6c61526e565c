// Token embedding lookup (forward) and its scatter-add gradient (backward) on fp32 tables that may span several bindings.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

public static class Embedding
{
    [StructLayout(LayoutKind.Sequential)]
    private struct ForwardPush
    {
        public uint Tokens, Dim, GroupsX;
        public int RowStart, RowCount, Vocab;
        public uint ZeroInvalid, TableOffset, IdsOffset, OutOffset;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct BackwardPush
    {
        public uint Tokens, Dim, GroupsX;
        public int RowStart, RowCount;
        public uint PieceStart, PieceCount, IdsOffset, DyOffset, TableOffset;
    }

    /// <summary>
    /// output[t, :] = table[ids[t], :] (table [vocab, dim] F32, ids [T] I32, output [T, dim] F32). Writes output.
    /// Rows of tokens whose id is outside [0, vocab) are zeroed (left untouched when <paramref name="zeroInvalid"/> is false).
    /// </summary>
    public static void Forward(DeviceTensor table, DeviceTensor ids, DeviceTensor output, bool zeroInvalid = true)
    {
        BasicOps.RequireF32(table, output);
        OpChecks.RequireI32(ids);
        long vocab = table.Rows, dim = table.RowElements, tokens = ids.Count;
        if (vocab > int.MaxValue) throw new ArgumentException($"embedding: vocabulary {vocab} exceeds int32 ids");
        OpChecks.RequireCount(output, tokens * dim, "embedding output");
        if (tokens == 0 || dim == 0) return;
        var ctx = table.Context;
        var p = ctx.Pipelines.Get(ShaderId.EmbeddingForward, BasicOps.WorkgroupSize);
        var tablePieces = Pieces.Split(vocab, [table], [dim]);
        foreach (var tp in Pieces.Split(tokens, [ids, output], [1, dim]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, tp.Count);
            for (int i = 0; i < tablePieces.Count; i++)
            {
                var vp = tablePieces[i];
                ctx.Commands.Dispatch(p, [Binding.Read(vp.Ranges[0]), Binding.Read(tp.Ranges[0]), Binding.Write(tp.Ranges[1])],
                    new ForwardPush
                    {
                        Tokens = (uint)tp.Count, Dim = (uint)dim, GroupsX = gx,
                        RowStart = (int)vp.Start, RowCount = (int)vp.Count, Vocab = (int)vocab,
                        ZeroInvalid = zeroInvalid && i == 0 ? 1u : 0u,
                        TableOffset = vp.Offsets[0], IdsOffset = tp.Offsets[0], OutOffset = tp.Offsets[1],
                    }, gx, gy, 1, "embedding_forward");
            }
        }
    }

    /// <summary>
    /// dTable[v, :] += Σ_{t: ids[t] = v} dOutput[t, :] (ids [T] I32, dOutput [T, dim], dTable [vocab, dim]). Accumulates
    /// dTable (zero it first for a fresh gradient). Deterministic: each row's contributions are added in token order.
    /// Ids outside [0, vocab) contribute nothing. ids must lie in one binding; dOutput and dTable may be split.
    /// </summary>
    public static void Backward(DeviceTensor ids, DeviceTensor dOutput, DeviceTensor dTable)
    {
        BasicOps.RequireF32(dOutput, dTable);
        OpChecks.RequireI32(ids);
        long vocab = dTable.Rows, dim = dTable.RowElements, tokens = ids.Count;
        if (vocab > int.MaxValue) throw new ArgumentException($"embedding: vocabulary {vocab} exceeds int32 ids");
        OpChecks.RequireCount(dOutput, tokens * dim, "embedding gradient");
        if (tokens == 0 || dim == 0) return;
        var ctx = dTable.Context;
        var p = ctx.Pipelines.Get(ShaderId.EmbeddingBackward, BasicOps.WorkgroupSize);
        var (idsRange, idsOffset) = OpChecks.Whole(ids);
        var tablePieces = Pieces.Split(vocab, [dTable], [dim]);
        foreach (var dp in Pieces.Split(tokens, [dOutput], [dim]))
        {
            // Tokens at or after the piece's end own nothing in it: only the first Start + Count workgroups can act.
            var (gx, gy) = OpChecks.Grid(ctx, dp.Start + dp.Count);
            foreach (var vp in tablePieces)
            {
                ctx.Commands.Dispatch(p, [Binding.Read(idsRange), Binding.Read(dp.Ranges[0]), Binding.ReadWrite(vp.Ranges[0])],
                    new BackwardPush
                    {
                        Tokens = (uint)tokens, Dim = (uint)dim, GroupsX = gx,
                        RowStart = (int)vp.Start, RowCount = (int)vp.Count,
                        PieceStart = (uint)dp.Start, PieceCount = (uint)dp.Count,
                        IdsOffset = idsOffset, DyOffset = dp.Offsets[0], TableOffset = vp.Offsets[0],
                    }, gx, gy, 1, "embedding_backward");
            }
        }
    }
}
