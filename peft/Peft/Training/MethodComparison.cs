// The result of `vkpeft compare`: one row per trained method, read back from each run's own summary.json and
// metrics.csv (so the table always says what the runs wrote), rendered as a markdown table for pasting into a
// discussion, CSV, JSON, and one SVG with every method's held-out loss curve.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Reports;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>One compared run as its output folder records it.</summary>
/// <param name="Label">The method as the comparison names it (e.g. lora-fa).</param>
/// <param name="Base">The base quantization it trained against (e.g. nf4-dq).</param>
/// <param name="Folder">The run's output folder.</param>
/// <param name="EvalCurve">Held-out loss at step 0 and at each evaluated step.</param>
public sealed record ComparedRun(string Label, string Base, string Folder, int Steps, long TrainableParameters, double? InitialEvalLoss, double? EvalLoss,
    double? FinalTrainLoss, double TokensPerSecond, long PeakDeviceBytes, IReadOnlyDictionary<MemoryCategory, long> PeakByCategory,
    IReadOnlyList<(int Step, double Loss)> EvalCurve)
{
    /// <summary>Reads the run in <paramref name="folder"/>; a missing or malformed file is a ModelFormatException naming it and the field.</summary>
    public static ComparedRun Read(string label, string baseQuant, string folder)
    {
        var summaryFile = Path.Combine(folder, "summary.json");
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(summaryFile)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new ModelFormatException(summaryFile, "json", e.Message); }
        double? Num(string field)
        {
            try { return root[field]?.GetValue<double>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new ModelFormatException(summaryFile, field, "is not a number"); }
        }
        double Need(string field) => Num(field) ?? throw new ModelFormatException(summaryFile, field, "is missing");
        var categories = new Dictionary<MemoryCategory, long>();
        var byCategory = root["peak_device_bytes_by_category"] as JsonObject ?? throw new ModelFormatException(summaryFile, "peak_device_bytes_by_category", "is missing");
        foreach (var c in Enum.GetValues<MemoryCategory>())
            categories[c] = byCategory[c.ToString().ToLowerInvariant()] is { } v ? v.GetValue<long>() : 0;
        double? initial = Num("initial_eval_loss");
        var curve = new List<(int, double)>();
        if (initial is { } i0) curve.Add((0, i0));
        curve.AddRange(ReadEvalCurve(Path.Combine(folder, "metrics.csv")));
        return new ComparedRun(label, baseQuant, folder, (int)Need("steps"), (long)Need("trainable_parameters"), initial, Num("eval_loss"),
            Num("final_train_loss"), Need("tokens_per_second"), (long)Need("peak_device_bytes"), categories, curve);
    }

    /// <summary>(step, held-out loss) of each row of metrics.csv that has one.</summary>
    private static IEnumerable<(int, double)> ReadEvalCurve(string file)
    {
        var lines = File.ReadAllLines(file);
        if (lines.Length == 0 || !lines[0].StartsWith("step,train_loss,eval_loss", StringComparison.Ordinal))
            throw new ModelFormatException(file, "header", "expected step,train_loss,eval_loss,…");
        for (int n = 1; n < lines.Length; n++)
        {
            if (lines[n].Length == 0) continue;
            var cells = lines[n].Split(',');
            if (cells.Length < 3 || !int.TryParse(cells[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int step))
                throw new ModelFormatException(file, $"line {n + 1}", "expected step,train_loss,eval_loss,…");
            if (cells[2].Length == 0) continue;
            if (!double.TryParse(cells[2], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss))
                throw new ModelFormatException(file, $"line {n + 1}", $"eval_loss '{cells[2]}' is not a number");
            yield return (step, loss);
        }
    }
}

/// <summary>What was compared and the runs, with the renderings `compare` prints and writes.</summary>
/// <param name="Setup">One line on what every run shared (model, data, steps, tokens per step, seed, device).</param>
public sealed record MethodComparison(string Setup, IReadOnlyList<ComparedRun> Runs)
{
    public const string MarkdownFile = "compare.md", CsvFile = "compare.csv", JsonFile = "compare.json", PlotFile = "compare.svg";

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Methods that did not finish, each as "label: reason" (listed under the table and in the JSON).</summary>
    public IReadOnlyList<string> Failed { get; init; } = [];

    /// <summary>The memory categories some run used (the others would be columns of zeros).</summary>
    public IReadOnlyList<MemoryCategory> Categories =>
        [.. Enum.GetValues<MemoryCategory>().Where(c => Runs.Any(r => r.PeakByCategory.GetValueOrDefault(c) > 0))];

    /// <summary>The markdown table (GitHub style), one row per method, in the order compared.</summary>
    public string Markdown()
    {
        var header = new List<string> { "method", "base", "trainable params", "held-out loss start", "held-out loss end", "tokens/s", "peak device memory" };
        header.AddRange(Categories.Select(c => c.ToString().ToLowerInvariant()));
        var sb = new StringBuilder();
        sb.Append("| ").AppendJoin(" | ", header).Append(" |\n");
        sb.Append('|').AppendJoin('|', header.Select((_, i) => i < 2 ? "---" : "---:")).Append("|\n");
        foreach (var r in Runs)
        {
            var cells = new List<string>
            {
                r.Label, r.Base, r.TrainableParameters.ToString("N0", Inv), Loss(r.InitialEvalLoss), Loss(r.EvalLoss),
                r.TokensPerSecond.ToString("F0", Inv), ByteSize.Format(r.PeakDeviceBytes),
            };
            cells.AddRange(Categories.Select(c => ByteSize.Format(r.PeakByCategory.GetValueOrDefault(c))));
            sb.Append("| ").AppendJoin(" | ", cells).Append(" |\n");
        }
        return sb.ToString();
    }

    private static string Loss(double? v) => v is { } x ? x.ToString("F4", Inv) : "-";

    /// <summary>The same rows as CSV with full-precision numbers and bytes (one column per memory category).</summary>
    public string Csv()
    {
        var cats = Enum.GetValues<MemoryCategory>();
        var sb = new StringBuilder("method,base,trainable_parameters,initial_eval_loss,eval_loss,final_train_loss,tokens_per_second,peak_device_bytes");
        foreach (var c in cats) sb.Append(',').Append(c.ToString().ToLowerInvariant()).Append("_bytes");
        sb.Append('\n');
        static string N(double? v) => v is { } x ? x.ToString("R", Inv) : "";
        foreach (var r in Runs)
        {
            sb.AppendJoin(',', r.Label, r.Base, r.TrainableParameters.ToString(Inv), N(r.InitialEvalLoss), N(r.EvalLoss), N(r.FinalTrainLoss),
                N(r.TokensPerSecond), r.PeakDeviceBytes.ToString(Inv));
            foreach (var c in cats) sb.Append(',').Append(r.PeakByCategory.GetValueOrDefault(c).ToString(Inv));
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Everything as one JSON object: the setup line and per run the numbers, the memory by category and the held-out curve.</summary>
    public JsonObject Json() => new()
    {
        ["setup"] = Setup,
        ["failed"] = new JsonArray([.. Failed.Select(f => (JsonNode)f)]),
        ["runs"] = new JsonArray([.. Runs.Select(r => (JsonNode)new JsonObject
        {
            ["method"] = r.Label,
            ["base"] = r.Base,
            ["folder"] = r.Folder,
            ["steps"] = r.Steps,
            ["trainable_parameters"] = r.TrainableParameters,
            ["initial_eval_loss"] = r.InitialEvalLoss,
            ["eval_loss"] = r.EvalLoss,
            ["final_train_loss"] = r.FinalTrainLoss,
            ["tokens_per_second"] = r.TokensPerSecond,
            ["peak_device_bytes"] = r.PeakDeviceBytes,
            ["peak_device_bytes_by_category"] = new JsonObject(Enum.GetValues<MemoryCategory>().Select(c =>
                KeyValuePair.Create(c.ToString().ToLowerInvariant(), (JsonNode?)r.PeakByCategory.GetValueOrDefault(c)))),
            ["eval_curve"] = new JsonArray([.. r.EvalCurve.Select(p => (JsonNode)new JsonArray(p.Step, p.Loss))]),
        })]),
    };

    /// <summary>Writes compare.md (setup line and table), compare.csv, compare.json and compare.svg into <paramref name="dir"/>, each atomically.</summary>
    public void Write(string dir)
    {
        Directory.CreateDirectory(dir);
        DurableFile.WriteAllText(Path.Combine(dir, MarkdownFile), Setup + "\n\n" + Markdown() + string.Concat(Failed.Select(f => $"\nfailed: {f}\n")));
        DurableFile.WriteAllText(Path.Combine(dir, CsvFile), Csv());
        DurableFile.WriteAllText(Path.Combine(dir, JsonFile), Json().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Plots.LossCurves(Path.Combine(dir, PlotFile), [.. Runs.Select(r => (r.Label, r.EvalCurve))], "held-out loss per method");
    }
}
