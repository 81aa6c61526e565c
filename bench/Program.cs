// Entry point of the vkpeft benchmarks: './vkpeft bench kernels' (device peaks and kernel throughput).
using System.CommandLine;
using System.Text.Json;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public static class Program
{
    public static int Main(string[] args)
    {
        var device = new Option<string?>("--device") { Description = "Vulkan device: index or part of its name", Recursive = true };
        var json = new Option<bool>("--json") { Description = "Print one JSON object", Recursive = true };
        var quick = new Option<bool>("--quick") { Description = "Smaller sizes and fewer runs", Recursive = true };
        var root = new RootCommand("vkpeft benchmarks") { device, json, quick };

        var kernels = new Command("kernels", "Measure the device's FMA peak and copy bandwidth, and each kernel's throughput against them");
        kernels.SetAction(parse =>
        {
            var opts = RuntimeOptions.FromEnvironment() with { Device = parse.GetValue(device) ?? Environment.GetEnvironmentVariable("VKPEFT_DEVICE") };
            using var ctx = new VulkanContext(opts);
            bool asJson = parse.GetValue(json);
            var (peak, results) = KernelBench.Run(ctx, parse.GetValue(quick), msg => { if (!asJson) Console.Error.WriteLine(msg); });
            if (asJson) Console.WriteLine(KernelBench.ToJson(peak, results, ctx.Caps.Name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else KernelBench.Print(peak, results, ctx.Caps.Name);
            return 0;
        });
        root.Subcommands.Add(kernels);
        try
        {
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (VulkanException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 2;
        }
    }
}
