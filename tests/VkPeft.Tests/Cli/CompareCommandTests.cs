// `vkpeft compare` end to end on stories260K (two methods, a few steps): the printed markdown table says exactly what
// each run's summary.json says, the CSV/JSON/SVG carry the same runs and curves; method names resolve through the
// registry (variants, METHOD+SWITCH, methods registered later); mistakes and failed runs are one-line errors.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using VkPeft.Tests.Training;
using VkPeft.Tests.Training.OutputScale;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Cli;

[Collection("cli")]
public sealed class CompareCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-compare-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string[] Args(string methods, string outDir, params string[] more) =>
    [
        "compare", "--model", Model, "--data", TrainerTests.WriteData(_dir, 32, 1), "--eval-data", TrainerTests.WriteData(_dir, 6, 2),
        "--methods", methods, "--steps", "3", "--batch", "4", "--seq-len", "32", "--lr", "5e-3", "--rank", "4", "--out", outDir, .. more,
    ];

    [Fact]
    public void TableMatchesEachRunsSummaryAndFilesHoldTheCurves()
    {
        var outDir = Path.Combine(_dir, "cmp");
        var (code, output, err) = Run(Args("lora,ia3", outDir));
        Assert.True(code == 0, err + output);
        var inv = CultureInfo.InvariantCulture;

        // The markdown table: a header, the alignment row, one row per method in the order given.
        var lines = output.Split('\n').Where(l => l.StartsWith('|')).ToList();
        Assert.Equal(4, lines.Count);
        string[] Cells(string line) => [.. line.Trim().Trim('|').Split('|').Select(c => c.Trim())];
        var header = Cells(lines[0]).ToList();
        Assert.Equal(["method", "base", "trainable params", "held-out loss start", "held-out loss end", "tokens/s", "peak device memory"], header.Take(7));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "compare.json")))!;
        var csv = File.ReadAllLines(Path.Combine(outDir, "compare.csv"));
        Assert.Equal(3, csv.Length);
        var svg = File.ReadAllText(Path.Combine(outDir, "compare.svg"));
        Assert.Equal(File.ReadAllText(Path.Combine(outDir, "compare.md")).Split('\n').Where(l => l.StartsWith('|')), lines);
        string[] methods = ["lora", "ia3"];
        var trainable = new List<long>();
        for (int i = 0; i < methods.Length; i++)
        {
            var row = Cells(lines[2 + i]);
            var s = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, methods[i], "summary.json")))!;
            Assert.Equal(methods[i], row[0]);
            Assert.Equal("nf4-dq", row[1]);
            long parameters = s["trainable_parameters"]!.GetValue<long>();
            trainable.Add(parameters);
            Assert.Equal(parameters.ToString("N0", inv), row[2]);
            double start = s["initial_eval_loss"]!.GetValue<double>(), end = s["eval_loss"]!.GetValue<double>();
            Assert.Equal(start.ToString("F4", inv), row[3]);
            Assert.Equal(end.ToString("F4", inv), row[4]);
            Assert.Equal(s["tokens_per_second"]!.GetValue<double>().ToString("F0", inv), row[5]);
            Assert.Equal(ByteSize.Format(s["peak_device_bytes"]!.GetValue<long>()), row[6]);
            for (int c = 7; c < header.Count; c++)
                Assert.Equal(ByteSize.Format(s["peak_device_bytes_by_category"]![header[c]]!.GetValue<long>()), row[c]);
            Assert.Contains(nameof(MemoryCategory.Weights).ToLowerInvariant(), header);

            // JSON and CSV: the same numbers at full precision; the curve runs from step 0 to the last step (evaluated every step here).
            var r = json["runs"]![i]!;
            Assert.Equal(methods[i], r["method"]!.GetValue<string>());
            Assert.Equal(parameters, r["trainable_parameters"]!.GetValue<long>());
            Assert.Equal(end, r["eval_loss"]!.GetValue<double>());
            var curve = r["eval_curve"]!.AsArray().Select(p => (Step: p![0]!.GetValue<int>(), Loss: p[1]!.GetValue<double>())).ToList();
            Assert.Equal([0, 1, 2, 3], curve.Select(p => p.Step));
            Assert.Equal(start, curve[0].Loss);
            Assert.Equal(end, curve[^1].Loss);
            var csvRow = csv[1 + i].Split(',');
            Assert.Equal(methods[i], csvRow[0]);
            Assert.Equal(end, double.Parse(csvRow[4], inv));
            Assert.Equal(s["peak_device_bytes"]!.GetValue<long>(), long.Parse(csvRow[7], inv));
            Assert.Contains($">{methods[i]}<", svg);
        }
        // The method options reach their method: LoRA at --rank 4 on every linear.
        var loraR4 = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 4 }, Targets = Enum.GetValues<TargetModule>(), BaseQuant = BaseQuant.Parse("nf4-dq") };
        Assert.Equal(PeftMethod.Lora.Parameters(ModelCatalog.Get("stories260K"), loraR4).Sum(p => p.Count), trainable[0]);
        Assert.True(trainable[1] < trainable[0], "(IA)³ trains fewer values than LoRA");

        // A second compare into the same folder is refused; --resume keeps the finished runs and rewrites the same table.
        (code, _, err) = Run(Args("lora,ia3", outDir));
        Assert.NotEqual(0, code);
        Assert.Contains("--resume", err);
        var (code2, output2, err2) = Run(Args("lora,ia3", outDir, "--resume"));
        Assert.True(code2 == 0, err2);
        Assert.Contains("finished earlier", err2);
        Assert.Equal(lines, output2.Split('\n').Where(l => l.StartsWith('|')));
    }

    [Fact]
    public void AMethodFailingWhileTrainingIsReportedNotAStackTrace()
    {
        // A poisoned gradient at step 2 stops every run there: each failure is named with its method, and with none
        // finished the comparison ends with a one-line error and a non-zero exit.
        FaultInjection.Set("nan-grad:2");
        try
        {
            var (code, output, err) = Run(Args("lora,ia3", Path.Combine(_dir, "nan")));
            Assert.NotEqual(0, code);
            Assert.Contains("error: lora: step 2", err);
            Assert.Contains("error: ia3: step 2", err);
            Assert.Contains("no method finished", err);
            Assert.DoesNotContain("   at ", err + output);
        }
        finally { FaultInjection.Set(null); }
    }

    [Fact]
    public void MethodNamesResolveThroughTheRegistry()
    {
        var fa = MethodSpec.Parse("LoRA-FA");
        Assert.Same(PeftMethod.Lora, fa.Method);
        Assert.Equal("lora-fa", fa.Label);
        var cfg = fa.Apply(new AdapterConfig { Method = fa.Method, BaseQuant = BaseQuant.None });
        Assert.True(cfg.SettingsOf<LoraSettings>().FreezeA);
        Assert.True(MethodSpec.Parse("lora+rslora+freeze-a").Apply(new AdapterConfig { Method = PeftMethod.Lora, BaseQuant = BaseQuant.None }).SettingsOf<LoraSettings>() is { UseRsLora: true, FreezeA: true });
        Assert.Same(PeftMethods.Get("ia3"), MethodSpec.Parse("ia3").Method);
        Assert.Empty(MethodSpec.Parse("adapter").Switches);
        PeftMethods.Register(OutputScaleMethod.Instance);   // a method the library does not know, registered later
        Assert.Same(OutputScaleMethod.Instance, MethodSpec.Parse("output-scale").Method);
        Assert.Contains("output-scale", MethodSpec.Known);
        Assert.Contains("lora-fa", MethodSpec.Known);

        var unknown = Assert.Throws<SettingException>(() => MethodSpec.Parse("lorax"));
        Assert.Contains("lorax", unknown.Message);
        Assert.Contains("ia3", unknown.Message);
        Assert.Contains("freeze-a", Assert.Throws<SettingException>(() => MethodSpec.Parse("lora+bogus")).Message);
        Assert.Contains("twice", Assert.Throws<SettingException>(() => MethodSpec.ParseList("lora, ia3,LORA")).Message);
        Assert.Contains("no method", Assert.Throws<SettingException>(() => MethodSpec.ParseList(" , ")).Message);
    }

    [Fact]
    public void MistakesAreOneLineErrorsBeforeAnythingTrains()
    {
        foreach (var (methods, mentioned) in new[] { ("lora,nope", "nope"), ("lora,qalora", "group_size"), ("ia3+freeze-a", "--freeze-a") })
        {
            var outDir = Path.Combine(_dir, "bad");
            var (code, output, err) = Run(Args(methods, outDir, "--group-size", "32"));
            Assert.NotEqual(0, code);
            Assert.Contains(mentioned, err + output);
            Assert.DoesNotContain("   at ", err + output);
            Assert.False(Directory.Exists(Path.Combine(outDir, "lora")), "nothing trained");
        }
    }
}
