// `vkpeft info [--json]`: the chosen Vulkan device, its limits, memory heaps and budget, optional features, the kernel
// path each op uses and why, other devices.
using System.CommandLine;
using System.Text.Json;
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
            var node = DeviceReport.Describe(ctx, SettingFlags.Spell);
            if (parse.GetValue(json))
                Console.WriteLine(node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else
                Print(ctx);
            return 0;
        });
        return cmd;
    }

    private static void Print(VulkanContext ctx)
    {
        var c = ctx.Caps;
        var console = AnsiConsole.Console;
        console.MarkupLine($"[bold]{Markup.Escape(c.Name)}[/] ({c.Kind}, Vulkan {c.ApiVersion}, driver {Markup.Escape(c.DriverName)} {Markup.Escape(c.DriverInfo)})");
        console.MarkupLine($"driver source: {Markup.Escape(DeviceReport.DriverSource())}");
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
        foreach (var p in KernelPathReport.Describe(ctx)) k.AddRow(Markup.Escape(p.Op), Markup.Escape(p.Path), Markup.Escape(p.Explain(SettingFlags.Spell)));
        console.Write(k);
        console.MarkupLine($"vkpeft memory budget: [bold]{ByteSize.Format(ctx.Arena.Budget)}[/] (--memory-budget to lower it)");
        console.MarkupLine("Devices present:");
        foreach (var d in ctx.AllDevices)
            console.MarkupLine($"  {(d.Index == ctx.DeviceIndex ? "*" : " ")} {d.Index}: {Markup.Escape(d.Name)} ({d.Kind}, Vulkan {d.ApiVersion})");
    }

    private static string YesNo(bool b) => b ? "yes" : "no";
}
