// Rows of their own before each sequence on the device, for virtual input tokens (prompt tuning) and for a joined
// attention prefix (prefix tuning, see AttentionPrefixRows): each sequence of T tokens becomes P + T rows, the P extra
// rows first (positions 0…P−1), the tokens after them (positions P…P+T−1). Extra rows predict nothing (target −1).
// Virtual tokens are the learned embeddings of those rows; for a prefix the rows are placeholders (a token's embedding
// in training, zeros at inference: finite, never read by a real row) whose keys and values each layer overwrites.
// Training lays the rows out on the host (ids and targets with P placeholder slots per sequence); inference scatters the
// runner's compact [B·T, dim] stream into the expanded one and gathers the real rows back after the layers. The backward
// hands each sequence's P rows of ∂loss/∂x to the prompt hook, which sums them (in sequence order, deterministically).
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public static class VirtualTokenRows
{
    /// <summary>Rows the adapter adds before every sequence: its virtual tokens, or the length of its joined attention prefix.</summary>
    public static int ExtraRows(IAdapterRuntime? adapter) =>
        adapter?.InputEmbedding?.VirtualTokens ?? (adapter?.AttentionPrefix is { Gated: false } prefix ? prefix.PrefixLength : 0);

    /// <summary>
    /// ids and targets [batch·seqLen] laid out as [batch·(P + seqLen)]: P placeholder slots (id 0, target −1) before each
    /// sequence's own.
    /// </summary>
    public static (int[] Ids, int[] Targets) Expand(int[] ids, int[] targets, int batch, int seqLen, int virtualTokens)
    {
        if (ids.Length != batch * seqLen || targets.Length != batch * seqLen)
            throw new ArgumentException($"expected {batch * seqLen} ids and targets");
        int s = virtualTokens + seqLen;
        var outIds = new int[batch * s];
        var outTargets = new int[batch * s];
        for (int b = 0; b < batch; b++)
        {
            Array.Fill(outTargets, -1, b * s, virtualTokens);
            Array.Copy(ids, b * seqLen, outIds, b * s + virtualTokens, seqLen);
            Array.Copy(targets, b * seqLen, outTargets, b * s + virtualTokens, seqLen);
        }
        return (outIds, outTargets);
    }

    /// <summary>Writes the hook's embeddings [P, dim] into the first P rows of each of <paramref name="batch"/> sequences of x [batch·(P+T), dim].</summary>
    public static void WritePrompt(IInputEmbeddingHook hook, DeviceTensor x, int batch)
    {
        int p = hook.VirtualTokens;
        long s = x.Rows / batch;
        for (int b = 0; b < batch; b++) BasicOps.Copy(hook.Embeddings, x.RowsView(b * s, p));
    }

    /// <summary>
    /// expanded [batch·(P+T), dim] = per sequence P rows (the hook's embeddings, or zeros without one), then the
    /// sequence's T rows of compact [batch·T, dim].
    /// </summary>
    public static void Scatter(IInputEmbeddingHook? hook, int p, DeviceTensor compact, DeviceTensor expanded, int batch, int seqLen)
    {
        if (hook != null) WritePrompt(hook, expanded.RowsView(0, (long)batch * (p + seqLen)), batch);
        else
            for (int b = 0; b < batch; b++) BasicOps.Fill(expanded.RowsView((long)b * (p + seqLen), p), 0);
        for (int b = 0; b < batch; b++)
            BasicOps.Copy(compact.RowsView((long)b * seqLen, seqLen), expanded.RowsView((long)b * (p + seqLen) + p, seqLen));
    }

    /// <summary>compact [batch·T, dim] = the real-token rows of expanded [batch·(P+T), dim].</summary>
    public static void Gather(DeviceTensor expanded, DeviceTensor compact, int batch, int seqLen, int virtualTokens)
    {
        for (int b = 0; b < batch; b++)
            BasicOps.Copy(expanded.RowsView((long)b * (virtualTokens + seqLen) + virtualTokens, seqLen), compact.RowsView((long)b * seqLen, seqLen));
    }

    /// <summary>Hands the virtual rows of ∂loss/∂x [batch·(P+T), dim] to the hook, sequence by sequence (it sums them).</summary>
    public static void Backward(IInputEmbeddingHook hook, DeviceTensor dX, int batch)
    {
        int p = hook.VirtualTokens;
        long s = dX.Rows / batch;
        for (int b = 0; b < batch; b++) hook.EmbeddingsBackward(dX.RowsView(b * s, p));
    }
}
