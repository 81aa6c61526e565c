// LLaMA-Adapter's hook in the attention block: after the causal attention, a gated attention over learned prompt
// keys/values (projected by the layer's frozen k/v weights, no RoPE) in a softmax of its own is added to the attention
// output that the o-projection reads; its backward adds to dq and accumulates the prompt and gate gradients.
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public interface IAdaptionPromptHook
{
    /// <summary>
    /// The tensor the o-projection of layer <paramref name="layer"/> reads: <paramref name="o"/> itself when the layer
    /// has no adaption prompt, else the method's buffer holding o + gate·softmax(q·Kᵀ/√d)·V. q [rows, n_heads·hd] holds
    /// the rotated queries, o [rows, n_heads·hd] the causal attention output (left unchanged).
    /// </summary>
    DeviceTensor Forward(DeviceLayer weights, int layer, DeviceTensor q, DeviceTensor o);

    /// <summary>
    /// Backward of <see cref="Forward"/> given ∂loss/∂(its output) <paramref name="dOutput"/> (which is also ∂loss/∂o):
    /// adds ∂loss/∂q into <paramref name="dq"/> and accumulates the prompt's (through the frozen k/v weights) and the
    /// gate's gradients. Nothing when the layer has no adaption prompt.
    /// </summary>
    void Backward(DeviceLayer weights, int layer, DeviceTensor q, DeviceTensor dOutput, DeviceTensor dq);
}
