// Creates the device runtime and the initial tensors of an adapter by its method (LoRA, QA-LoRA, bottleneck adapters).
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

public static class AdapterFactory
{
    /// <summary>Adds freshly initialized trainable tensors for <paramref name="adapter"/> to <paramref name="p"/>.</summary>
    public static void Initialize(TrainableParameters p, LlamaConfig c, AdapterConfig adapter, int seed)
    {
        switch (adapter.Method)
        {
            case PeftMethod.Lora or PeftMethod.QaLora: LoraRuntime.Initialize(p, c, adapter, seed); break;
            case PeftMethod.Adapter: BottleneckRuntime.Initialize(p, c, adapter, seed); break;
            default: throw new NotSupportedException($"unknown adapter method {adapter.Method}");
        }
    }

    /// <summary>The runtime that applies (and trains) <paramref name="adapter"/> with the tensors in <paramref name="p"/>.</summary>
    public static ITrainableAdapter Create(VulkanContext ctx, LlamaConfig c, AdapterConfig adapter, TrainableParameters p, int maxRows) =>
        adapter.Method switch
        {
            PeftMethod.Lora or PeftMethod.QaLora => new LoraRuntime(ctx, c, adapter, p, maxRows),
            PeftMethod.Adapter => new BottleneckRuntime(ctx, c, adapter, p, maxRows),
            _ => throw new NotSupportedException($"unknown adapter method {adapter.Method}"),
        };
}
