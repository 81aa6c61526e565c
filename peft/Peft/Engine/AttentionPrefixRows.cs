// A joined attention prefix on the device (prefix tuning / P-tuning v2): each sequence carries P rows of its own before
// its tokens (VirtualTokenRows), and every layer overwrites those rows' keys (after RoPE: prefix keys are never rotated)
// and values with the layer's learned prefix [P, kv_dim]. The causal attention then lets every real query see all P
// prefix keys in the one softmax, at RoPE positions P… for the real tokens — the KV-cache layout of PEFT — and a KV cache
// holds the prefix once. In the backward, the prefix rows of ∂keys and ∂values are the prefix's gradients (handed to the
// hook per sequence: their sum over the batch, in order) and are then zeroed, so nothing flows into the placeholder rows.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public static class AttentionPrefixRows
{
    /// <summary>Overwrites the first P rows of each sequence's keys and values k, v [batch·seqLen, kv_dim] with layer <paramref name="layer"/>'s prefix.</summary>
    public static void Write(IAttentionPrefixHook hook, int layer, DeviceTensor k, DeviceTensor v, int batch, int seqLen)
    {
        var (keys, values, _) = hook.Prefix(layer);
        int p = hook.PrefixLength;
        for (int b = 0; b < batch; b++)
        {
            BasicOps.Copy(keys, k.RowsView((long)b * seqLen, p));
            BasicOps.Copy(values, v.RowsView((long)b * seqLen, p));
        }
    }

    /// <summary>Hands each sequence's prefix rows of dK, dV [batch·seqLen, kv_dim] to <see cref="IAttentionPrefixHook.PrefixBackward"/>, in order.</summary>
    public static void PerSequenceBackward(IAttentionPrefixHook hook, int layer, DeviceTensor dK, DeviceTensor dV, int batch, int seqLen)
    {
        int p = hook.PrefixLength;
        for (int b = 0; b < batch; b++)
            hook.PrefixBackward(layer, dK.RowsView((long)b * seqLen, p), dV.RowsView((long)b * seqLen, p), null);
    }

    /// <summary>
    /// Hands the batch's prefix rows of dK, dV [batch·seqLen, kv_dim] (before the inverse RoPE) to the hook, then
    /// zeroes them: the placeholder rows' own projections get no gradient.
    /// </summary>
    public static void Backward(IAttentionPrefixHook hook, int layer, DeviceTensor dK, DeviceTensor dV, int batch, int seqLen)
    {
        int p = hook.PrefixLength;
        hook.PrefixBackwardBatch(layer, dK, dV, batch, seqLen);
        for (int b = 0; b < batch; b++)
        {
            BasicOps.Fill(dK.RowsView((long)b * seqLen, p), 0);
            BasicOps.Fill(dV.RowsView((long)b * seqLen, p), 0);
        }
    }
}
