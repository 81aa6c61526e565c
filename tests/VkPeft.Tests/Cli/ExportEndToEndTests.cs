// A user's path through exports: train an adapter on stories260K, export it and merged models in every format, and load
// each back with `eval` — the merged fp32/f16 models reproduce base+adapter, quantized ones stay close, QA-LoRA's INT4
// merge adds no error.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Cli;

[Collection("cli")]
[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class ExportEndToEndTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-export-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Data() => Write("data.txt", Lines());

    /// <summary>The first lines of the training data: what every `eval` and `--check-data` here reads (a merged model
    /// reproduces base+adapter on any text; a few windows, not all forty, keep the many evaluations cheap).</summary>
    private string EvalData() => Write("eval.txt", Lines().Take(EvalLines));

    private const int EvalLines = 8;

    private static IEnumerable<string> Lines()
    {
        var rng = new Random(3);
        return Enumerable.Range(0, 40).Select(i => $"Pip pip hooray! Bo found {(rng.Next(2) == 0 ? "a kite" : "a bell")}. Bo shared it. Pip pip hooray!");
    }

    private string Write(string name, IEnumerable<string> lines)
    {
        var p = Path.Combine(_dir, name);
        File.WriteAllLines(p, lines);
        return p;
    }

    private static double Nll(params string[] args)
    {
        var (code, output, err) = Run(["eval", .. args, "--json"]);
        Assert.True(code == 0, err + output);
        return JsonNode.Parse(output)!["mean_nll"]!.GetValue<double>();
    }

    [Fact]
    public void LoraAdapterExportsAndMergesLoadBack()
    {
        var run = Path.Combine(_dir, "run");
        // The memory levers the planner prints (offloading changes where state lives, not the result).
        var (code, _, err) = Run("train", "--model", Model, "--data", Data(), "--steps", "12", "--batch", "4", "--seq-len", "32", "--lr", "3e-3", "--quant", "nf4-dq",
            "--checkpointing", "true", "--loss-chunk", "32", "--offload-checkpoints", "--optimizer-on-host", "--out", run);
        Assert.True(code == 0, err);
        var data = EvalData();
        double withAdapter = Nll("--model", Model, "--data", data, "--adapter", run);
        double baseNll = Nll("--model", Model, "--data", data, "--quant", "nf4-dq");
        Assert.True(withAdapter < baseNll - 0.3, $"adapter {withAdapter} vs base {baseNll}");

        // PEFT adapter: loads back and applies identically.
        var peft = Path.Combine(_dir, "peft");
        (code, _, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.True(code == 0, err);
        Assert.True(File.Exists(Path.Combine(peft, "adapter_config.json")));
        Assert.Equal(withAdapter, Nll("--model", Model, "--data", data, "--adapter", peft), 6);

        // Merged into the dequantized NF4+DQ base: the fp32 exports reproduce base+adapter (fp32 vs merged-in-float64).
        foreach (var (format, dtype, ext, tol) in new[] { ("safetensors", "f32", "", 1e-4), ("safetensors", "f16", "", 3e-2), ("llama2c", "f32", ".bin", 1e-4),
                                                          ("gguf", "f32", ".gguf", 1e-4), ("gguf", "q8_0", ".gguf", 5e-2) })
        {
            var outPath = Path.Combine(_dir, $"merged-{format}-{dtype}{ext}");
            (code, var output, err) = Run("export", "--model", Model, "--adapter", run, "--format", format, "--dtype", dtype, "--out", outPath);
            Assert.True(code == 0, $"{format}/{dtype}: {err}{output}");
            var modelArg = format == "llama2c" ? outPath : outPath;
            string[] tokArgs = format == "safetensors" ? ["--tokenizer", SharedData.Stories260K("tok512.bin")] : [];
            double merged = Nll(["--model", modelArg, "--data", data, .. tokArgs]);
            Assert.True(Math.Abs(merged - withAdapter) <= tol, string.Create(CultureInfo.InvariantCulture, $"{format}/{dtype}: merged {merged} vs base+adapter {withAdapter}"));
        }

        // Re-quantizing the merged weights to NF4+DQ is the known merge trap (the update is rounded again): the export
        // reports the error it introduced, and --check-data shows what it costs in NLL.
        var nf4 = Path.Combine(_dir, "merged-nf4");
        (code, var report, err) = Run("export", "--model", Model, "--adapter", run, "--format", "safetensors", "--dtype", "nf4-dq", "--out", nf4,
            "--check-data", data, "--tokenizer", SharedData.Stories260K("tok512.bin"));
        Assert.True(code == 0, err + report);
        Assert.Contains("check on", report);
        Assert.True(double.IsFinite(Nll("--model", nf4, "--data", data, "--tokenizer", SharedData.Stories260K("tok512.bin"))));

        // An existing output is not replaced without --force.
        (code, var o2, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", peft);
        Assert.NotEqual(0, code);
        Assert.Contains("--force", err + o2);
    }

    [Fact]
    public void QaLoraMergesIntoInt4WithoutAddedError()
    {
        var run = Path.Combine(_dir, "qa");
        var (code, _, err) = Run("train", "--model", Model, "--data", Data(), "--method", "qalora", "--group-size", "4", "--steps", "10", "--batch", "4", "--seq-len", "32", "--lr", "3e-3", "--out", run);
        Assert.True(code == 0, err);
        var data = EvalData();
        double withAdapter = Nll("--model", Model, "--data", data, "--adapter", run);
        var merged = Path.Combine(_dir, "qa-int4");
        (code, var output, err) = Run("export", "--model", Model, "--adapter", run, "--format", "safetensors", "--dtype", "int4", "--out", merged);
        Assert.True(code == 0, err + output);
        double m = Nll("--model", merged, "--data", data, "--tokenizer", SharedData.Stories260K("tok512.bin"));
        // The merge only shifts the INT4 zero points: same model up to fp32 rounding.
        Assert.True(Math.Abs(m - withAdapter) < 1e-4, $"merged INT4 {m} vs base+adapter {withAdapter}");
    }
}
