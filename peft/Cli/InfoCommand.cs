// `vkpeft info [--json]`: the chosen Vulkan device, its limits, memory heaps and budget, optional features, the kernel
// path each op uses and why, other devices.
using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class InfoCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var cmd = new Command("info", "Show the Vulkan device vkpeft will use, its limits, memory and features") { json };
        cmd.SetAction(parse =>
        {
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            var node = Describe(ctx);
            if (parse.GetValue(json))
                Console.WriteLine(node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else
                Print(ctx);
            return 0;
        });
        return cmd;
    }

    public static JsonObject Describe(VulkanContext ctx)
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
                ["why"] = k.Why,
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

    private static void Print(VulkanContext ctx)
    {
        var c = ctx.Caps;
        var console = AnsiConsole.Console;
        console.MarkupLine($"[bold]{Markup.Escape(c.Name)}[/] ({c.Kind}, Vulkan {c.ApiVersion}, driver {Markup.Escape(c.DriverName)} {Markup.Escape(c.DriverInfo)})");
        console.MarkupLine($"driver source: {Markup.Escape(DriverSource())}");
        var t = new Table().AddColumn("limit").AddColumn(new TableColumn("value").RightAligned());
        t.AddRow("maxStorageBufferRange", ByteSize.Format(c.MaxStorageBufferRange));
        t.AddRow("maxMemoryAllocationSize", ByteSize.Format(c.MaxMemoryAllocationSize));
        t.AddRow("maxComputeWorkGroupCount", string.Join(" x ", c.MaxComputeWorkGroupCount));
        t.AddRow("maxComputeWorkGroupSize", string.Join(" x ", c.MaxComputeWorkGroupSize));
        t.AddRow("maxComputeWorkGroupInvocations", c.MaxComputeWorkGroupInvocations.ToString());
        t.AddRow("maxComputeSharedMemorySize", ByteSize.Format(c.MaxComputeSharedMemorySize));
        t.AddRow("minStorageBufferOffsetAlignment", c.MinStorageBufferOffsetAlignment.ToString());
        t.AddRow("maxPushConstantsSize", c.MaxPushConstantsSize.ToString());
        t.AddRow("subgroup size / arithmetic / shuffle", $"{c.SubgroupSize} / {YesNo(c.SubgroupArithmetic)} / {YesNo(c.SubgroupShuffle)}");
        console.Write(t);
        var f = new Table().AddColumn("optional feature").AddColumn("present");
        f.AddRow("shaderFloat16", YesNo(c.ShaderFloat16));
        f.AddRow("shaderInt8", YesNo(c.ShaderInt8));
        f.AddRow("storageBuffer8BitAccess", YesNo(c.StorageBuffer8Bit));
        f.AddRow("storageBuffer16BitAccess", YesNo(c.StorageBuffer16Bit));
        f.AddRow("bufferDeviceAddress", YesNo(c.BufferDeviceAddress));
        f.AddRow("timestamp queries", YesNo(c.TimestampsSupported));
        f.AddRow("VK_EXT_memory_budget", YesNo(c.MemoryBudgetExtension));
        f.AddRow("unified (host-mapped) device memory", YesNo(c.UnifiedMemory));
        console.Write(f);
        var h = new Table().AddColumn("heap").AddColumn(new TableColumn("size").RightAligned()).AddColumn("device-local").AddColumn(new TableColumn("budget").RightAligned()).AddColumn(new TableColumn("in use").RightAligned());
        foreach (var heap in ctx.QueryHeaps())
            h.AddRow(heap.Index.ToString(), ByteSize.Format(heap.Size), YesNo(heap.DeviceLocal),
                heap.Budget is { } b ? ByteSize.Format(b) : "-", heap.Usage is { } u ? ByteSize.Format(u) : "-");
        console.Write(h);
        var k = new Table().AddColumn("op").AddColumn("kernel path").AddColumn("why");
        foreach (var p in KernelPathReport.Describe(ctx)) k.AddRow(Markup.Escape(p.Op), Markup.Escape(p.Path), Markup.Escape(p.Why));
        console.Write(k);
        console.MarkupLine($"vkpeft memory budget: [bold]{ByteSize.Format(ctx.Arena.Budget)}[/] (--memory-budget to lower it)");
        console.MarkupLine("Devices present:");
        foreach (var d in ctx.AllDevices)
            console.MarkupLine($"  {(d.Index == ctx.DeviceIndex ? "*" : " ")} {d.Index}: {Markup.Escape(d.Name)} ({d.Kind}, Vulkan {d.ApiVersion})");
    }

    private static string YesNo(bool b) => b ? "yes" : "no";
}
