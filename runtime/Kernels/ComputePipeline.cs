// A compiled compute pipeline for one (shader, specialization constants) pair, with what reflection says it binds.
using Silk.NET.Vulkan;

namespace VkPeft.Runtime.Kernels;

public sealed class ComputePipeline
{
    internal ComputePipeline(ShaderId id, uint[] spec, Pipeline handle, SpirvInfo info)
    {
        Id = id;
        SpecConstants = spec;
        Handle = handle;
        BindingCount = info.BindingCount;
        PushConstantSize = info.PushConstantSize;
        Name = ShaderCatalog.Info(id).Name;
    }

    public ShaderId Id { get; }
    public string Name { get; }
    public uint[] SpecConstants { get; }
    public Pipeline Handle { get; }
    /// <summary>Storage-buffer bindings 0..BindingCount-1 the shader declares.</summary>
    public int BindingCount { get; }
    /// <summary>Bytes of the shader's push-constant block.</summary>
    public uint PushConstantSize { get; }
}
