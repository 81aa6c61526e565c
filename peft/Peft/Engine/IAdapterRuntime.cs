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

/// <summary>An adapter being trained: its forward hooks plus the matching backward hooks the trainer calls.</summary>
public interface ITrainableAdapter : IAdapterRuntime
{
    /// <summary>Training mode applies dropout (seeded by <see cref="StepSeed"/>) and saves what the backward needs.</summary>
    bool Training { get; set; }

    /// <summary>Seed of the current micro-step's random masks; the backward reuses it.</summary>
    uint StepSeed { get; set; }

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.Linear"/>: accumulates parameter gradients and adds the branch's input
    /// gradient to dx — or, with <paramref name="overwriteDx"/>, writes it there, after every read of x (dx may then be
    /// x's own buffer). Returns whether dx was written (false when the adapter has no branch at this target).
    /// </summary>
    bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false);

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.AttentionOutput"/>: given ∂loss/∂(adapter output) <paramref name="dzIn"/>,
    /// writes ∂loss/∂(adapter input, the o-projection output) into <paramref name="dzOut"/>. Accumulates parameter gradients.
    /// </summary>
    void AttentionOutputBackward(int layer, DeviceTensor dzIn, DeviceTensor dzOut);

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.MlpOutput"/>: given ∂loss/∂(block output) <paramref name="dzIn"/>, writes
    /// ∂loss/∂(MLP output before the adapter) into <paramref name="dzOut"/> and adds ∂loss/∂h to <paramref name="dh"/>
    /// (parallel adapters read the MLP input h). Accumulates parameter gradients.
    /// </summary>
    void MlpOutputBackward(int layer, DeviceTensor h, DeviceTensor dzIn, DeviceTensor dzOut, DeviceTensor dh);

    /// <summary>True when the attention/MLP output hooks do anything (the trainer skips the extra buffers otherwise).</summary>
    bool HasBlockHooks { get; }
}
