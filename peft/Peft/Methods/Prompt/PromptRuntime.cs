// Prompt tuning's device runtime: no hook around any linear or block; the virtual tokens are the input-embedding hook.
// The trainer and the runner place prompt_embeddings [n, dim] before every sequence (VirtualTokenRows); the backward adds
// each sequence's ∂loss/∂(virtual rows) [n, dim] to the gradient, in sequence order.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Methods.Prompt;

public sealed class PromptRuntime : ITrainableAdapter, IInputEmbeddingHook, IDisposable
{
    private readonly TrainableTensor _prompt;   // [n, dim]

    public PromptRuntime(AdapterConfig a, TrainableParameters p)
    {
        _prompt = p.ByName[PromptMethod.TensorName];
        VirtualTokens = PromptMethod.Settings(a).VirtualTokens;
        if (_prompt.Param.Rows != VirtualTokens)
            throw new ArgumentException($"{PromptMethod.TensorName} has {_prompt.Param.Rows} rows, the configuration {VirtualTokens} virtual tokens");
    }

    public bool Training { get; set; }
    public uint StepSeed { get; set; }

    /// <summary>No branch beside any linear.</summary>
    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y) { }

    public IInputEmbeddingHook InputEmbedding => this;

    public int VirtualTokens { get; }

    public DeviceTensor Embeddings => _prompt.Param;

    public void EmbeddingsBackward(DeviceTensor dEmbeddings)
    {
        var grad = _prompt.Grad ?? throw new InvalidOperationException("the prompt embeddings were loaded for inference: they have no gradient");
        BasicOps.Add(grad, dEmbeddings, grad);
    }

    public void Dispose() { }
}
