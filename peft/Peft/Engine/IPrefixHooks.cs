// The attention and input hooks of prompt-side methods: a key/value prefix every attention layer reads (prefix tuning:
// one softmax over prefix and sequence) and virtual tokens placed before the input embeddings (prompt tuning), each with
// its backward. The float64 ReferenceForward implements both, plus a gated prefix with its own softmax. On the device,
// virtual tokens and prefixes are rows of their own in front of each sequence (VirtualTokenRows, AttentionPrefixRows),
// so the ordinary causal attention gives the joined softmax; a gated prefix is refused there, because LLaMA-Adapter runs
// through its own kernels and hook (IAdaptionPromptHook).
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

/// <summary>Extra keys and values per layer, attended to by every query before the sequence's own (never masked, no RoPE).</summary>
public interface IAttentionPrefixHook
{
    /// <summary>Prefix positions P.</summary>
    int PrefixLength { get; }

    /// <summary>True: the prefix has its own softmax and its attention output is scaled by a per-head gate (LLaMA-Adapter).</summary>
    bool Gated { get; }

    /// <summary>Layer <paramref name="layer"/>'s prefix: keys and values [P, kv_dim] and, when gated, the gate [n_heads].</summary>
    (DeviceTensor Keys, DeviceTensor Values, DeviceTensor? Gate) Prefix(int layer);

    /// <summary>Accumulates ∂loss/∂keys, ∂loss/∂values [P, kv_dim] and ∂loss/∂gate [n_heads] into the method's gradients.</summary>
    void PrefixBackward(int layer, DeviceTensor dKeys, DeviceTensor dValues, DeviceTensor? dGate);

    /// <summary>
    /// The joined prefix's backward for a whole batch: the first P rows of each sequence of dK, dV [batch·seqLen,
    /// kv_dim] are that sequence's ∂keys and ∂values. By default <see cref="PrefixBackward"/> per sequence, in order; a
    /// method whose backward is costly per call (the projection MLP) sums the batch first.
    /// </summary>
    void PrefixBackwardBatch(int layer, DeviceTensor dK, DeviceTensor dV, int batch, int seqLen) =>
        AttentionPrefixRows.PerSequenceBackward(this, layer, dK, dV, batch, seqLen);
}

/// <summary>Virtual tokens: P embedding rows placed before each sequence's token embeddings.</summary>
public interface IInputEmbeddingHook
{
    /// <summary>Virtual tokens P per sequence.</summary>
    int VirtualTokens { get; }

    /// <summary>Their embeddings [P, dim].</summary>
    DeviceTensor Embeddings { get; }

    /// <summary>Adds one sequence's ∂loss/∂embeddings [P, dim] to the method's gradient (called once per sequence of a batch, in order: their sum).</summary>
    void EmbeddingsBackward(DeviceTensor dEmbeddings);
}
