// Builds the vkpeft command tree (System.CommandLine), runs it, and turns user mistakes into clear one-line errors.
using System.CommandLine;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class CliApp
{
    /// <summary>--device: index or name substring of the Vulkan device (env VKPEFT_DEVICE).</summary>
    public static readonly Option<string?> DeviceOption = new("--device") { Description = "Vulkan device to use: index or part of its name (default: best GPU; env VKPEFT_DEVICE)", Recursive = true };

    /// <summary>--memory-budget: cap on device memory, e.g. 6GiB.</summary>
    public static readonly Option<string?> BudgetOption = new("--memory-budget") { Description = "Most device memory vkpeft may use, e.g. 6GiB (env VKPEFT_MEMORY_BUDGET)", Recursive = true };

    public static readonly Option<bool> ProfileOption = new("--profile") { Description = "Print per-kernel GPU time", Recursive = true };

    public static readonly Option<bool> ValidationOption = new("--validation") { Description = "Enable the Khronos validation layer", Recursive = true };

    /// <summary>--kernels fast|safe: safe forces the fp32 reference kernel paths (env VKPEFT_KERNELS=safe).</summary>
    public static readonly Option<string?> KernelsOption = new("--kernels")
    {
        Description = "fast (default: self-checked fast variants where the device has them) or safe (fp32 reference kernels only; env VKPEFT_KERNELS)",
        Recursive = true,
    };

    public static int Run(string[] args)
    {
        var root = new RootCommand("vkpeft: QLoRA-style fine-tuning of Llama-family models on any Vulkan GPU (or the CPU through lavapipe).\n  Also: ./vkpeft test, and ./vkpeft bench kernels|memory|train|generate (the benchmarks).");
        root.Options.Add(DeviceOption);
        root.Options.Add(BudgetOption);
        root.Options.Add(ProfileOption);
        root.Options.Add(ValidationOption);
        root.Options.Add(KernelsOption);
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(CompareCommand.Create());
        root.Subcommands.Add(ExportCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.SetAction(_ => root.Parse("--help").Invoke());   // bare `vkpeft` shows the commands
        root.Subcommands.Add(PlanCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        return Invoke(root, args);
    }

    internal static int Invoke(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        try
        {
            return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (UserError(e) is { } message)
        {
            Console.Error.WriteLine("error: " + message);
            return 2;
        }
    }

    /// <summary>The message to show for an exception caused by input or environment (no stack trace), or null for a bug.</summary>
    public static string? UserError(Exception e) => e switch
    {
        ValidationFailedException => null,
        ISettingError s => SettingFlags.Message(s),
        FormatException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException or UnauthorizedAccessException
            or CliUsageException or NotSupportedException => e.Message,
        ArgumentException a when a.GetType() == typeof(ArgumentException) => a.Message,
        VulkanException v => v.Message,
        IOException io => io.Message,
        _ => null,
    };

    /// <summary>Runtime options from the global options and the environment.</summary>
    public static RuntimeOptions RuntimeOptionsFrom(ParseResult parse)
    {
        var opts = RuntimeOptions.FromEnvironment();
        var device = parse.GetValue(DeviceOption);
        if (!string.IsNullOrWhiteSpace(device)) opts = opts with { Device = device };
        var budget = parse.GetValue(BudgetOption);
        if (!string.IsNullOrWhiteSpace(budget)) opts = opts with { MemoryBudget = ByteSize.Parse(budget, "--memory-budget") };
        if (parse.GetValue(ProfileOption)) opts = opts with { Profile = true };
        if (parse.GetValue(ValidationOption)) opts = opts with { Validation = true };
        switch (parse.GetValue(KernelsOption))
        {
            case null: break;
            case "safe": opts = opts with { SafeKernels = true }; break;
            case "fast": opts = opts with { SafeKernels = false }; break;
            case var k: throw new CliUsageException($"--kernels: expected 'fast' or 'safe', got '{k}'");
        }
        return opts;
    }
}

/// <summary>A mistake in how a command was called (bad value combination, missing input).</summary>
public sealed class CliUsageException(string message) : Exception(message);
