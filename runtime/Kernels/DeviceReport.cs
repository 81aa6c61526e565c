// The chosen device as one JSON object — identity, limits, subgroup, optional features, memory heaps and budget, the
// kernel path each op uses and why, other devices — for `vkpeft info --json` and `bench gpu-report`.
using System.Text.Json.Nodes;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class DeviceReport
{
    /// <summary>The report of <paramref name="ctx"/>'s device; settings a kernel path's why names are spelled by <paramref name="spell"/> when given.</summary>
    public static JsonObject Describe(VulkanContext ctx, Func<Setting, string>? spell = null)
    {
        var c = ctx.Caps;
        return new JsonObject
        {
            ["device"] = new JsonObject
            {
                ["index"] = ctx.DeviceIndex,
                ["name"] = c.Name,
                ["type"] = c.Kind.ToString(),
                ["vendor_id"] = $"0x{c.VendorId:x4}",
                ["device_id"] = $"0x{c.DeviceId:x4}",
                ["api_version"] = c.ApiVersion,
                ["driver"] = c.DriverName,
                ["driver_info"] = c.DriverInfo,
                ["driver_source"] = DriverSource(),
            },
            ["limits"] = new JsonObject
            {
                ["max_storage_buffer_range"] = c.MaxStorageBufferRange,
                ["max_memory_allocation_size"] = c.MaxMemoryAllocationSize,
                ["max_compute_work_group_count"] = new JsonArray(c.MaxComputeWorkGroupCount.Select(v => (JsonNode)v).ToArray()),
                ["max_compute_work_group_size"] = new JsonArray(c.MaxComputeWorkGroupSize.Select(v => (JsonNode)v).ToArray()),
                ["max_compute_work_group_invocations"] = c.MaxComputeWorkGroupInvocations,
                ["max_compute_shared_memory_size"] = c.MaxComputeSharedMemorySize,
                ["min_storage_buffer_offset_alignment"] = c.MinStorageBufferOffsetAlignment,
                ["max_push_constants_size"] = c.MaxPushConstantsSize,
            },
            ["subgroup"] = new JsonObject
            {
                ["size"] = c.SubgroupSize,
                ["arithmetic"] = c.SubgroupArithmetic,
                ["shuffle"] = c.SubgroupShuffle,
            },
            ["features"] = new JsonObject
            {
                ["shader_float16"] = c.ShaderFloat16,
                ["shader_int8"] = c.ShaderInt8,
                ["storage_buffer_8bit"] = c.StorageBuffer8Bit,
                ["storage_buffer_16bit"] = c.StorageBuffer16Bit,
                ["buffer_device_address"] = c.BufferDeviceAddress,
                ["timestamps"] = c.TimestampsSupported,
                ["memory_budget_extension"] = c.MemoryBudgetExtension,
                ["unified_memory"] = c.UnifiedMemory,
                ["cooperative_matrices_nv"] = new JsonArray(c.CooperativeMatricesNV.Select(m => (JsonNode)$"{m.M}x{m.N}x{m.K} {m.AType} x {m.BType} -> {m.CType} ({m.Scope})").ToArray()),
            },
            ["memory"] = new JsonObject
            {
                ["budget_bytes"] = ctx.Arena.Budget,
                ["heaps"] = new JsonArray(ctx.QueryHeaps().Select(h => (JsonNode)new JsonObject
                {
                    ["index"] = h.Index,
                    ["size"] = h.Size,
                    ["device_local"] = h.DeviceLocal,
                    ["budget"] = h.Budget,
                    ["usage"] = h.Usage,
                }).ToArray()),
            },
            ["kernel_paths"] = new JsonArray(KernelPathReport.Describe(ctx).Select(k => (JsonNode)new JsonObject
            {
                ["op"] = k.Op,
                ["path"] = k.Path,
                ["why"] = k.Explain(spell),
            }).ToArray()),
            ["devices"] = new JsonArray(ctx.AllDevices.Select(d => (JsonNode)new JsonObject
            {
                ["index"] = d.Index,
                ["name"] = d.Name,
                ["type"] = d.Kind.ToString(),
                ["api_version"] = d.ApiVersion,
                ["chosen"] = d.Index == ctx.DeviceIndex,
            }).ToArray()),
        };
    }

    /// <summary>Where the Vulkan driver comes from: the launcher's Mesa 25 lavapipe, an explicit driver file, or the system's.</summary>
    public static string DriverSource()
    {
        if (Environment.GetEnvironmentVariable("VKPEFT_DRIVER_SOURCE") is { Length: > 0 } launcher) return launcher;
        var files = Environment.GetEnvironmentVariable("VK_DRIVER_FILES") is { Length: > 0 } f ? f : Environment.GetEnvironmentVariable("VK_ICD_FILENAMES");
        if (!string.IsNullOrEmpty(files)) return $"the driver files in VK_DRIVER_FILES/VK_ICD_FILENAMES ({files})";
        return Environment.GetEnvironmentVariable("VKPEFT_SYSTEM_MESA") == "1"
            ? "the system's Vulkan drivers (VKPEFT_SYSTEM_MESA=1)"
            : "the system's Vulkan drivers";
    }
}
