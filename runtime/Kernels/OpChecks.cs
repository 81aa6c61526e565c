// Argument checks shared by the layer-op wrappers: dtypes, shapes, and whole-tensor bindings.
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

internal static class OpChecks
{
    public static void RequireI32(DeviceTensor t)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.DType != DType.I32) throw new ArgumentException($"'{t.Name}' is {t.DType}; token ids and targets must be I32");
        ObjectDisposedException.ThrowIf(t.IsDisposed, t);
    }

    public static void RequireCount(DeviceTensor t, long count, string what)
    {
        if (t.Count != count) throw new ArgumentException($"{what}: '{t.Name}' {t.ShapeString} should hold {count} elements");
    }

    public static void RequireSameCount(DeviceTensor a, DeviceTensor b, string what) => RequireCount(b, a.Count, what);

    /// <summary>The whole tensor as one aligned binding and the element offset of its first element (it must not be split).</summary>
    public static (BufferRange Range, uint Offset) Whole(DeviceTensor t) => Pieces.RangeOf(t, 0, Math.Max(t.Count, 0));

    public static (uint X, uint Y) Grid(VkPeft.Runtime.Vulkan.VulkanContext ctx, long groups) => Pieces.Grid(groups, ctx.Caps.MaxComputeWorkGroupCount[0]);
}
