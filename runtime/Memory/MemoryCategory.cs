// What a device allocation is for; the arena keeps current and peak bytes per category.
namespace VkPeft.Runtime.Memory;

public enum MemoryCategory
{
    Weights,
    Trainable,
    Gradients,
    Optimizer,
    Activations,
    Workspace,
    Staging,
}

/// <summary>Where an allocation lives: device-local memory, or host memory the device reads and writes over the bus.</summary>
public enum MemoryPlace
{
    Device,
    Host,
}
