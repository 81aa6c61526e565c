// How trainable adapters plug into the device forward pass: hooks after each base linear and around the attention and
// MLP blocks. The base model calls them; LoRA, QA-LoRA and bottleneck adapters implement them.
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public interface IAdapterRuntime
{
    /// <summary>After y = x·Wᵀ of a base linear: add the adapter's contribution to y (forward).</summary>
    void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y);

    /// <summary>After the attention output projection z (before the residual add): transform z in place (Houlsby adapters).</summary>
    void AttentionOutput(int layer, DeviceTensor z);

    /// <summary>After the MLP output z (before the residual add), with the MLP input h: transform z in place.</summary>
    void MlpOutput(int layer, DeviceTensor h, DeviceTensor z);
}
