// A loaded adapter ready for inference on the device: its tensors (no gradients or optimizer state) and its method's
// runtime in inference mode (no dropout), freed together. Generation-style users (serving, benchmarks) share it.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods;

public sealed class InferenceAdapter : IDisposable
{
    private readonly TrainableParameters _parameters;

    private InferenceAdapter(TrainableParameters parameters, ITrainableAdapter runtime)
    {
        _parameters = parameters;
        Runtime = runtime;
    }

    /// <summary>The method's device runtime (the hooks the forward calls).</summary>
    public ITrainableAdapter Runtime { get; }

    /// <summary>Device bytes of the adapter's tensors.</summary>
    public long Bytes => _parameters.Count * sizeof(float);

    /// <summary>Uploads <paramref name="adapter"/> and creates its runtime for batches of up to <paramref name="maxRows"/> token rows.</summary>
    public static InferenceAdapter Create(VulkanContext ctx, LlamaConfig config, AdapterWeights adapter, int maxRows)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var p = new TrainableParameters(ctx, withOptimizer: false);
        try
        {
            foreach (var (name, t) in adapter.Tensors) p.Add(name, t.Shape, t.Data);
            var runtime = adapter.Config.Method.CreateRuntime(ctx, config, adapter.Config, p, maxRows);
            runtime.Training = false;
            return new InferenceAdapter(p, runtime);
        }
        catch
        {
            p.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        (Runtime as IDisposable)?.Dispose();
        _parameters.Dispose();
    }
}
