// The vkpeft command line as a user meets it: generate and eval on the real stories260K, --json outputs, and clear
// one-line errors with a non-zero exit for every kind of mistake (never a stack trace).
using System.Text.Json.Nodes;
using VkPeft.Cli;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Cli;

[CollectionDefinition("cli", DisableParallelization = true)]
public sealed class CliCollection;

[Collection("cli")]
public sealed class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-cli-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int code = CliApp.Run(args);
            return (code, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    /// <summary>`eval … --json`'s mean NLL; the command must succeed.</summary>
    internal static double EvalNll(params string[] args)
    {
        var (code, output, err) = Run(["eval", .. args, "--json"]);
        Assert.True(code == 0, err + output);
        return JsonNode.Parse(output)!["mean_nll"]!.GetValue<double>();
    }

    [Fact]
    public void GenerateGreedyPrintsTheReferenceText()
    {
        var (code, output, err) = Run("generate", "--model", Model, "--prompt", "Once upon a time", "--max-tokens", "200", "--temperature", "0");
        Assert.True(code == 0, err);
        var expected = DeviceModelTests.Reference.Value.GetProperty("greedy_text").GetString()!;
        Assert.Equal(expected, output.TrimEnd('\n'));
        Assert.Contains("tokens/s", err);
    }

    [Fact]
    public void EvalJsonMatchesTheReferenceNll()
    {
        var data = Path.Combine(_dir, "ref.txt");
        File.WriteAllText(data, DeviceModelTests.Reference.Value.GetProperty("text").GetString() + "\n");
        var (code, output, err) = Run("eval", "--model", Model, "--data", data, "--json");
        Assert.True(code == 0, err);
        var j = JsonNode.Parse(output)!;
        double expected = DeviceModelTests.Reference.Value.GetProperty("mean_nll_fp64").GetDouble();
        Assert.InRange(j["mean_nll"]!.GetValue<double>(), expected - 1e-5, expected + 1e-5);
        Assert.Equal(15, j["tokens"]!.GetValue<long>());
        Assert.InRange(j["perplexity"]!.GetValue<double>(), Math.Exp(expected) - 1e-4, Math.Exp(expected) + 1e-4);
        (code, output, _) = Run("eval", "--model", Model, "--data", data, "--quant", "nf4-dq", "--json");
        double q = DeviceModelTests.Reference.Value.GetProperty("mean_nll_nf4_dq").GetDouble();
        Assert.InRange(JsonNode.Parse(output)!["mean_nll"]!.GetValue<double>(), q - 1e-4, q + 1e-4);
    }

    public static TheoryData<string[], string> Mistakes => new()
    {
        { ["frobnicate"], "frobnicate" },
        { ["info", "--bogus"], "--bogus" },
        { ["generate", "--model", "/nope/model.bin", "--prompt", "x"], "/nope/model.bin" },
        { ["generate", "--model", "MODEL", "--prompt", "x", "--temperature", "-1"], "--temperature" },
        { ["generate", "--model", "MODEL", "--prompt", "x", "--top-p", "1.5"], "--top-p" },
        { ["generate", "--model", "MODEL", "--prompt", "x", "--quant", "nf3"], "--quant" },
        { ["generate", "--model", "MODEL", "--prompt", "x", "--max-tokens", "lots"], "lots" },
        { ["eval", "--model", "MODEL", "--data", "/nope/data.txt"], "/nope/data.txt" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "0", "--out", "OUT"], "--steps" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "2", "--rank", "0", "--out", "OUT"], "--rank" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "2", "--targets", "q,zz", "--out", "OUT"], "zz" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "2", "--method", "qalora", "--out", "OUT"], "does not divide" },
        { ["train", "--model", "MODEL", "--data", "EMPTY", "--steps", "2", "--out", "OUT"], "EMPTY" },
        { ["info", "--memory-budget", "12X"], "--memory-budget" },
        { ["info", "--kernels", "turbo"], "--kernels" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "2", "--offload-checkpoints", "--checkpointing", "false", "--out", "OUT"], "--checkpointing" },
        { ["plan", "--config", "stories260K", "--memory", "8GiB", "--check", "--check-steps", "0"], "--check-steps" },
        { ["generate", "--model", "CORRUPT", "--prompt", "x"], "CORRUPT" },
        { ["train", "--model", "MODEL", "--data", "DATA", "--steps", "2", "--out", "OUT", "--resume"], "checkpoint" },
        { ["generate", "--model", "MODEL", "--prompt", "x", "--adapter", "/nope/adapter"], "/nope/adapter" },
    };

    [Theory]
    [MemberData(nameof(Mistakes))]
    public void MistakesGetAClearErrorAndNonZeroExit(string[] args, string mentioned)
    {
        var data = Path.Combine(_dir, "d.txt");
        File.WriteAllLines(data, Enumerable.Repeat("Once upon a time there was a cat.", 20));
        var empty = Path.Combine(_dir, "empty.txt");
        File.WriteAllText(empty, "\n");
        var corrupt = Path.Combine(_dir, "corrupt.bin");
        File.WriteAllBytes(corrupt, new byte[10]);
        string Sub(string a) => a switch
        {
            "MODEL" => Model, "DATA" => data, "EMPTY" => empty, "OUT" => Path.Combine(_dir, "out"), "CORRUPT" => corrupt, _ => a,
        };
        var real = args.Select(Sub).ToArray();
        var (code, output, err) = Run(real);
        Assert.NotEqual(0, code);
        var all = output + err;
        Assert.Contains(Sub(mentioned), all);
        Assert.DoesNotContain("   at ", all);   // no stack trace
    }
}
