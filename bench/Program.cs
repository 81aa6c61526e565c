// Entry point of the vkpeft benchmarks: './vkpeft bench kernels' (device peaks and kernel throughput), 'memory' (peak
// memory per category against the analytic model), 'train' (training-step tokens/s), 'generate' (decode/prefill), 'serve' and
// 'gpu-report' (device, kernel paths, GPU-vs-CPU kernel checks and the benchmarks in one JSON).
using System.CommandLine;
using System.Text.Json;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public static class Program
{
    /// <summary>Runtime options from the environment with --device (or VKPEFT_DEVICE).</summary>
    public static RuntimeOptions Options(string? device) =>
        RuntimeOptions.FromEnvironment() with { Device = device ?? Environment.GetEnvironmentVariable("VKPEFT_DEVICE") };

    public static int Main(string[] args)
    {
        var device = new Option<string?>("--device") { Description = "Vulkan device: index or part of its name", Recursive = true };
        var json = new Option<bool>("--json") { Description = "Print one JSON object", Recursive = true };
        var quick = new Option<bool>("--quick") { Description = "Smaller sizes and fewer runs", Recursive = true };
        if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 160;
        var root = new RootCommand("vkpeft benchmarks") { device, json, quick };

        var only = new Option<string[]>("--only") { Description = "Kernel groups to measure: " + string.Join(", ", KernelBench.Groups) + " (default: all)", AllowMultipleArgumentsPerToken = true };
        only.AcceptOnlyFromAmong(KernelBench.Groups);
        var kernels = new Command("kernels", "Measure the device's FMA peak and copy bandwidth, and each kernel's throughput against them") { only };
        kernels.SetAction(parse =>
        {
            using var ctx = new VulkanContext(Options(parse.GetValue(device)));
            bool asJson = parse.GetValue(json);
            var (peak, results) = KernelBench.Run(ctx, parse.GetValue(quick), msg => { if (!asJson) Console.Error.WriteLine(msg); }, parse.GetValue(only));
            if (asJson) Console.WriteLine(KernelBench.ToJson(peak, results, ctx.Caps.Name).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else KernelBench.Print(peak, results, ctx.Caps.Name);
            return 0;
        });
        root.Subcommands.Add(kernels);
        root.Subcommands.Add(MemoryBench.Create(device, json));
        root.Subcommands.Add(TrainBench.Create(device, json));
        root.Subcommands.Add(GenerateBench.Create(device, json));
        root.Subcommands.Add(ServeBench.Create(device, json));
        root.Subcommands.Add(GpuReport.Create(device, quick));
        try
        {
            return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is VulkanException or FormatException or NotSupportedException or DeviceMemoryBudgetException or FileNotFoundException
                                      or VkPeft.Peft.Formats.ModelFormatException)
        {
            Console.Error.WriteLine("error: " + (e is ISettingError s ? VkPeft.Cli.SettingFlags.Message(s) : e.Message));
            return 2;
        }
    }
}
