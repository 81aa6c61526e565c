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
