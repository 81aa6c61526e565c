// The one pipeline cache: pipelines keyed by (shader id, specialization constants), created lazily and thread-safely,
// all sharing one descriptor-set layout (MaxBindings storage buffers) and one pipeline layout (128-byte push block).
using System.Runtime.InteropServices;
using Silk.NET.Core.Native;
using Silk.NET.Vulkan;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public sealed unsafe class ComputePipelineCache : DisposableObject
{
    public const int MaxBindings = 8;
    public const uint PushBlockSize = 128;
    private readonly VulkanContext _ctx;
    private readonly Dictionary<(ShaderId, string), ComputePipeline> _pipelines = [];
    private readonly Dictionary<ShaderId, ShaderModule> _modules = [];
    private readonly object _lock = new();
    private Silk.NET.Vulkan.PipelineCache _vkCache;

    internal ComputePipelineCache(VulkanContext ctx)
    {
        _ctx = ctx;
        if (ctx.Caps.MaxPerStageStorageBuffers < MaxBindings)
            throw new VulkanUnsupportedException($"the device allows {ctx.Caps.MaxPerStageStorageBuffers} storage buffers per stage; vkpeft needs {MaxBindings}");
        if (ctx.Caps.MaxPushConstantsSize < PushBlockSize)
            throw new VulkanUnsupportedException($"the device allows {ctx.Caps.MaxPushConstantsSize} bytes of push constants; vkpeft needs {PushBlockSize}");
        var bindings = stackalloc DescriptorSetLayoutBinding[MaxBindings];
        for (int i = 0; i < MaxBindings; i++)
            bindings[i] = new DescriptorSetLayoutBinding((uint)i, DescriptorType.StorageBuffer, 1, ShaderStageFlags.ComputeBit);
        var dslInfo = new DescriptorSetLayoutCreateInfo
        {
            SType = StructureType.DescriptorSetLayoutCreateInfo,
            BindingCount = MaxBindings,
            PBindings = bindings,
        };
        DescriptorSetLayout dsl;
        VkCheck.Ok(ctx.Vk.CreateDescriptorSetLayout(ctx.Device, &dslInfo, null, &dsl), "creating the descriptor-set layout");
        SetLayout = dsl;
        var range = new PushConstantRange(ShaderStageFlags.ComputeBit, 0, PushBlockSize);
        var plInfo = new PipelineLayoutCreateInfo
        {
            SType = StructureType.PipelineLayoutCreateInfo,
            SetLayoutCount = 1,
            PSetLayouts = &dsl,
            PushConstantRangeCount = 1,
            PPushConstantRanges = &range,
        };
        PipelineLayout pl;
        VkCheck.Ok(ctx.Vk.CreatePipelineLayout(ctx.Device, &plInfo, null, &pl), "creating the pipeline layout");
        Layout = pl;
        var pcInfo = new PipelineCacheCreateInfo { SType = StructureType.PipelineCacheCreateInfo };
        Silk.NET.Vulkan.PipelineCache cache;
        VkCheck.Ok(ctx.Vk.CreatePipelineCache(ctx.Device, &pcInfo, null, &cache), "creating the pipeline cache");
        _vkCache = cache;
    }

    public DescriptorSetLayout SetLayout { get; }
    public PipelineLayout Layout { get; }
    public int Count { get { lock (_lock) return _pipelines.Count; } }

    /// <summary>The pipeline for <paramref name="id"/> with specialization constants 0..n-1 set to <paramref name="spec"/>.</summary>
    public ComputePipeline Get(ShaderId id, params uint[] spec)
    {
        var key = (id, string.Join(",", spec));
        lock (_lock)
        {
            ThrowIfDisposed();
            if (_pipelines.TryGetValue(key, out var p)) return p;
            p = Create(id, spec);
            _pipelines[key] = p;
            return p;
        }
    }

    private ComputePipeline Create(ShaderId id, uint[] spec)
    {
        var vk = _ctx.Vk;
        var spirv = ShaderCatalog.LoadSpirv(id);
        var info = SpirvReflection.Reflect(spirv);
        var name = ShaderCatalog.Info(id).Name;
        if (info.BindingCount > MaxBindings) throw new InvalidOperationException($"shader {name} uses {info.BindingCount} bindings; at most {MaxBindings}");
        if (info.PushConstantSize > PushBlockSize) throw new InvalidOperationException($"shader {name} has a {info.PushConstantSize}-byte push block; at most {PushBlockSize}");
        if (!_modules.TryGetValue(id, out var module))
        {
            fixed (byte* code = spirv)
            {
                var smInfo = new ShaderModuleCreateInfo { SType = StructureType.ShaderModuleCreateInfo, CodeSize = (nuint)spirv.Length, PCode = (uint*)code };
                VkCheck.Ok(vk.CreateShaderModule(_ctx.Device, &smInfo, null, &module), $"creating shader module {name}");
            }
            _modules[id] = module;
        }
        var entries = stackalloc SpecializationMapEntry[Math.Max(spec.Length, 1)];
        for (int i = 0; i < spec.Length; i++) entries[i] = new SpecializationMapEntry((uint)i, (uint)(i * 4), 4);
        var entry = SilkMarshal.StringToPtr("main");
        try
        {
            fixed (uint* data = spec)
            {
                var specInfo = new SpecializationInfo { MapEntryCount = (uint)spec.Length, PMapEntries = entries, DataSize = (nuint)(spec.Length * 4), PData = data };
                var stage = new PipelineShaderStageCreateInfo
                {
                    SType = StructureType.PipelineShaderStageCreateInfo,
                    Stage = ShaderStageFlags.ComputeBit,
                    Module = module,
                    PName = (byte*)entry,
                    PSpecializationInfo = spec.Length > 0 ? &specInfo : null,
                };
                var cpInfo = new ComputePipelineCreateInfo { SType = StructureType.ComputePipelineCreateInfo, Stage = stage, Layout = Layout };
                Pipeline pipeline;
                VkCheck.Ok(vk.CreateComputePipelines(_ctx.Device, _vkCache, 1, &cpInfo, null, &pipeline), $"creating pipeline {name}({string.Join(",", spec)})");
                return new ComputePipeline(id, spec, pipeline, info);
            }
        }
        finally
        {
            SilkMarshal.Free(entry);
        }
    }

    protected override void DisposeCore()
    {
        var vk = _ctx.Vk;
        foreach (var p in _pipelines.Values) vk.DestroyPipeline(_ctx.Device, p.Handle, null);
        foreach (var m in _modules.Values) vk.DestroyShaderModule(_ctx.Device, m, null);
        _pipelines.Clear();
        _modules.Clear();
        if (_vkCache.Handle != 0) vk.DestroyPipelineCache(_ctx.Device, _vkCache, null);
        vk.DestroyPipelineLayout(_ctx.Device, Layout, null);
        vk.DestroyDescriptorSetLayout(_ctx.Device, SetLayout, null);
    }
}
