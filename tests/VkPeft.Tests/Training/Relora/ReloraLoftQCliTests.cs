// `vkpeft train --relora-every` and `--init loftq` through the commands: the base folders a run writes pair with its
// adapter in `eval` (and LoftQ's with `export`'s default merge), and option mistakes are one-line errors.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.Relora;

[Collection("cli")]
public sealed class ReloraLoftQCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-relora-cli-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");
    private static string Tokenizer => SharedData.Stories260K("tok512.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Data() => TrainerTests.WriteData(_dir, 24, 3);

    [Theory]
    [InlineData(new[] { "--relora-prune", "0.5" }, "need --relora-every")]
    [InlineData(new[] { "--relora-every", "4", "--relora-merge-from", "disk" }, "--relora-merge-from: unknown value 'disk'")]
    [InlineData(new[] { "--relora-every", "0" }, "--relora-every must be ≥ 1")]
    [InlineData(new[] { "--relora-every", "4", "--method", "ia3" }, "needs --method lora")]
    [InlineData(new[] { "--loftq-iters", "3" }, "--loftq-iters needs --init loftq")]
    [InlineData(new[] { "--init", "pissa" }, "--init: unknown value 'pissa'")]
    [InlineData(new[] { "--init", "loftq", "--quant", "none" }, "not none")]
    [InlineData(new[] { "--init", "loftq", "--loftq-iters", "0" }, "--loftq-iters must be ≥ 1")]
    public void OptionMistakesAreOneLineErrors(string[] extra, string expected)
    {
        var (code, text, err) = Run(["train", "--model", Model, "--data", Data(), "--steps", "3", "--out", Path.Combine(_dir, "run"), .. extra]);
        Assert.NotEqual(0, code);
        Assert.Contains(expected, err + text);
        Assert.DoesNotContain("   at ", err + text);
        Assert.False(Directory.Exists(Path.Combine(_dir, "run", "checkpoints")));
    }

    // Two training runs and five evaluations through the commands: the exhaustive tier.
    [Fact]
    [Trait("Category", "Exhaustive")]
    public void BaseFoldersPairWithTheAdapterThroughTheCommands()
    {
        var data = Data();
        string[] common = ["--model", Model, "--data", data, "--quant", "nf4-dq", "--rank", "4", "--alpha", "8", "--steps", "4", "--batch", "4",
            "--seq-len", "32", "--lr", "2e-3", "--eval-fraction", "0.25"];
        var relora = Path.Combine(_dir, "relora");
        var (code, text, err) = Run(["train", .. common, "--relora-every", "2", "--out", relora]);
        Assert.True(code == 0, err + text);
        Assert.Contains("full-precision copy", err);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(relora, "summary.json")))!;
        Assert.Equal(1, summary["relora"]!["cycles"]!.GetValue<int>());
        // The last cycle's adapter on relora-base (re-quantized: bit for bit the trained base) is the merged model up
        // to the base's NF4 error; in fp32 without the adapter, merged/ is relora-base + s·B·A.
        double trained = EvalNll("--model", Path.Combine(relora, "relora-base"), "--tokenizer", Tokenizer, "--data", data, "--quant", "nf4-dq", "--adapter", relora);
        double merged = EvalNll("--model", Path.Combine(relora, "merged"), "--tokenizer", Tokenizer, "--data", data, "--quant", "none");
        Assert.True(Math.Abs(trained - merged) < 0.1, string.Create(CultureInfo.InvariantCulture, $"relora-base + adapter {trained} vs merged {merged}"));

        var loftq = Path.Combine(_dir, "loftq");
        (code, text, err) = Run(["train", .. common, "--init", "loftq", "--loftq-iters", "2", "--out", loftq]);
        Assert.True(code == 0, err + text);
        Assert.Contains("LoftQ layer 0", err);
        var lq = JsonNode.Parse(File.ReadAllText(Path.Combine(loftq, "summary.json")))!["loftq"]!;
        Assert.True(lq["error_after"]!.GetValue<double>() < lq["error_before"]!.GetValue<double>());
        // The backbone quantized with the run's --quant plus the adapter equals export's default merge into that base.
        double withAdapter = EvalNll("--model", Path.Combine(loftq, "loftq-backbone"), "--tokenizer", Tokenizer, "--data", data, "--quant", "nf4-dq", "--adapter", loftq);
        var mergedLoftQ = Path.Combine(_dir, "loftq-merged");
        (code, text, err) = Run("export", "--model", Path.Combine(loftq, "loftq-backbone"), "--tokenizer", Tokenizer, "--adapter", loftq, "--format", "safetensors", "--out", mergedLoftQ);
        Assert.True(code == 0, err + text);
        double mergedNll = EvalNll("--model", mergedLoftQ, "--tokenizer", Tokenizer, "--data", data, "--quant", "none");
        Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-4, string.Create(CultureInfo.InvariantCulture, $"merged {mergedNll} vs backbone + adapter {withAdapter}"));   // W + ΔW rounded once vs W·x + ΔW·x
    }
}
