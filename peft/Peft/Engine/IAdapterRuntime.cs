// How trainable adapters plug into the device forward and backward passes. Around each base linear y = x·Wᵀ (+ b):
// a transform before (the input the base reads: input scaling) and the ordered transforms after (additive branch, output
// scaling, per-row renormalization), each with its backward. Around the blocks: the attention and MLP outputs (bottleneck
// adapters). At each RMSNorm: the weight it applies (norm tuning). In attention and at the input: a key/value prefix per layer and virtual input tokens (see IPrefixHooks.cs).
// The base model calls them; a PEFT method's runtime implements the ones it uses (the others default to doing nothing);
// the float64 ReferenceForward mirrors them.
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public interface IAdapterRuntime
{
    /// <summary>
    /// Before the base linear: the input it reads — <paramref name="x"/> itself (the default), or the method's scratch
    /// holding a transformed input (input scaling). The after-hook still receives the untransformed x.
    /// </summary>
    DeviceTensor LinearInput(int layer, TargetModule target, DeviceTensor x) => x;

    /// <summary>True when <see cref="LinearInput"/> transforms the input at <paramref name="target"/> (its backward then needs x kept apart from dx).</summary>
    bool TransformsLinearInput(TargetModule target) => false;

    /// <summary>
    /// After y = x̂·Wᵀ (+ b) of a base linear, with the linear's own input x: the method's after-transforms on y in their
    /// order — add a branch (LoRA), scale the output, renormalize rows.
    /// </summary>
    void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y);

    /// <summary>
    /// True when the after-hook at <paramref name="target"/> does more than add to y (output scaling, renormalization):
    /// the forward then never accumulates that linear straight into the residual stream.
    /// </summary>
    bool TransformsLinearOutput(TargetModule target) => false;

    /// <summary>After the attention output projection z (before the residual add): transform z in place (Houlsby adapters).</summary>
    void AttentionOutput(int layer, DeviceTensor z) { }

    /// <summary>After the MLP output z (before the residual add), with the MLP input h: transform z in place.</summary>
    void MlpOutput(int layer, DeviceTensor h, DeviceTensor z) { }

    /// <summary>
    /// The RMSNorm weight [dim] applied at <paramref name="norm"/> (AttnNorm or FfnNorm of <paramref name="layer"/>, or
    /// FinalNorm with layer −1): <paramref name="baseWeight"/> itself (the default), or the method's tuned weight.
    /// </summary>
    DeviceTensor NormWeight(int layer, LlamaTensorKind norm, DeviceTensor baseWeight) => baseWeight;

    /// <summary>Extra keys and values every attention layer reads (prefix tuning, LLaMA-Adapter); null when none.</summary>
    IAttentionPrefixHook? AttentionPrefix => null;

    /// <summary>Virtual tokens placed before the input embeddings (prompt tuning, P-tuning); null when none.</summary>
    IInputEmbeddingHook? InputEmbedding => null;

    /// <summary>A gated attention over learned prompts added to the attention output (LLaMA-Adapter); null when none.</summary>
    IAdaptionPromptHook? AdaptionPrompt => null;

    /// <summary>
    /// Called when the runtime is attached to the base model it runs on (a training step or a runner), before any hook: a
    /// method whose hooks read the frozen weights themselves (DoRA's row norms) takes them from here.
    /// </summary>
    void AttachBase(DeviceLlama model) { }
}

/// <summary>An adapter being trained: its forward hooks plus the matching backward hooks the trainer calls.</summary>
public interface ITrainableAdapter : IAdapterRuntime
{
    /// <summary>Training mode applies dropout (seeded by <see cref="StepSeed"/>) and saves what the backward needs.</summary>
    bool Training { get; set; }

    /// <summary>Seed of the current micro-step's random masks; the backward reuses it.</summary>
    uint StepSeed { get; set; }

    /// <summary>
    /// Backward of the after-transforms that are not additive (output scaling, renormalization), called first: from
    /// ∂loss/∂(hooked output) <paramref name="dy"/>, returns ∂loss/∂(base linear output plus additive branch) — dy itself
    /// when the target has none, else the method's scratch (dy is left unchanged). Accumulates their parameter gradients.
    /// </summary>
    DeviceTensor LinearOutputBackward(int layer, TargetModule target, DeviceTensor dy) => dy;

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.LinearInput"/> together with the base linear's input gradient: when the
    /// target has an input transform, writes (or with <paramref name="accumulate"/> adds) ∂loss/∂x through
    /// <paramref name="w"/> and the transform into <paramref name="dx"/>, accumulates the transform's parameter gradients
    /// and returns true; returns false (the default) when the trainer should take the base's input gradient itself.
    /// </summary>
    bool LinearInputBackward(int layer, TargetModule target, DeviceLinear w, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool accumulate) => false;

    /// <summary>
    /// Backward of an RMSNorm whose weight the method tunes (<see cref="IAdapterRuntime.NormWeight"/>): from the norm's
    /// input <paramref name="x"/> and ∂loss/∂(norm output) <paramref name="dh"/>, writes (or with
    /// <paramref name="accumulate"/> adds) ∂loss/∂x through the tuned weight into <paramref name="dx"/>, accumulates the
    /// weight's gradient and returns true; returns false (the default) when the trainer should use the base weight itself.
    /// </summary>
    bool NormBackward(int layer, LlamaTensorKind norm, DeviceTensor x, DeviceTensor dh, DeviceTensor dx, float eps, bool accumulate) => false;

    /// <summary>
    /// Backward of the additive branch of <see cref="IAdapterRuntime.Linear"/>: accumulates parameter gradients and adds the branch's input
    /// gradient to dx — or, with <paramref name="overwriteDx"/>, writes it there, after every read of x (dx may then be
    /// x's own buffer). Returns whether dx was written (false when the adapter has no branch at this target).
    /// </summary>
    bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false) => false;

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.AttentionOutput"/>: given ∂loss/∂(adapter output) <paramref name="dzIn"/>,
    /// writes ∂loss/∂(adapter input, the o-projection output) into <paramref name="dzOut"/>. Accumulates parameter gradients.
    /// </summary>
    void AttentionOutputBackward(int layer, DeviceTensor dzIn, DeviceTensor dzOut) =>
        throw new NotSupportedException($"{GetType().Name} has no block hooks");

    /// <summary>
    /// Backward of <see cref="IAdapterRuntime.MlpOutput"/>: given ∂loss/∂(block output) <paramref name="dzIn"/>, writes
    /// ∂loss/∂(MLP output before the adapter) into <paramref name="dzOut"/> and adds ∂loss/∂h to <paramref name="dh"/>
    /// (parallel adapters read the MLP input h). Accumulates parameter gradients.
    /// </summary>
    void MlpOutputBackward(int layer, DeviceTensor h, DeviceTensor dzIn, DeviceTensor dzOut, DeviceTensor dh) =>
        throw new NotSupportedException($"{GetType().Name} has no block hooks");

    /// <summary>True when the attention/MLP output hooks do anything (the trainer skips the extra buffers otherwise).</summary>
    bool HasBlockHooks => false;
}
