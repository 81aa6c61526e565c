// `vkpeft compare`: trains each of several PEFT methods with the same model, data, steps and seed (each run a normal
// `train` output folder under --out), then prints a markdown table (trainable parameters, held-out loss at the start
// and the end, tokens/s, peak device memory by category) and writes it as compare.md, compare.csv, compare.json and
// compare.svg (every method's held-out loss curve). Methods come from the PeftMethods registry (see MethodSpec).
using System.CommandLine;
using System.Globalization;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class CompareCommand
{
    /// <summary>Held-out evaluations per run when --eval-every is not given (the points of each loss curve).</summary>
    public const int DefaultCurvePoints = 10;

    public static Command Create()
    {
        var train = new TrainCliOptions($"Held-out evaluation every N steps: the points of the loss curves (default: {DefaultCurvePoints} per run)",
            "Output directory: one training run per method (METHOD/) and compare.md, .csv, .json and .svg");
        var methods = new Option<string>("--methods")
        {
            Description = "Comma-separated methods to compare: any of --method's (lora, ia3, adapter, …), lora-fa, dora, or METHOD+SWITCH (e.g. lora+rslora)",
            Required = true,
        };
        var resume = new Option<bool>("--resume") { Description = "Continue the comparison in --out: finished runs are kept, unfinished ones resume from their newest checkpoint" };
        var cmd = new Command("compare", "Train several PEFT methods on the same data, steps and seed and compare loss, speed and memory") { methods };
        train.AddTo(cmd, methodOption: false);
        cmd.Options.Add(resume);
        cmd.SetAction(parse =>
        {
            var specs = MethodSpec.ParseList(parse.GetValue(methods)!);
            string outDir = parse.GetValue(train.Output)!;
            int steps = parse.GetValue(train.Steps);
            int evalEvery = parse.GetValue(train.EvalEvery) is > 0 and var every ? every : Math.Max(1, (steps + DefaultCurvePoints - 1) / DefaultCurvePoints);
            bool resuming = parse.GetValue(resume);
            // Every run's options are checked before anything trains, so a mistake in the last method costs no time.
            var runs = specs.Select(s => (Spec: s, Options: train.Build(parse, s.Method, Path.Combine(outDir, s.Label), evalEvery, resuming, s.Apply))).ToList();
            if (!resuming)
                foreach (var (_, o) in runs)
                    if (File.Exists(Path.Combine(o.Out, Trainer.StateFile)) || TrainCheckpoint.Steps(o.Out).Count > 0)
                        throw new CliUsageException($"{o.Out} already holds a training run; pass --resume to continue the comparison or choose another --out");
            var (host, tok) = train.Model.LoadHost(parse);
            foreach (var (spec, o) in runs) o.Adapter.Method.ValidateConfig(o.Adapter, host.Config, $"--methods {spec.Label}");
            var first = runs[0].Options;
            if (host.Config.MaxSeqLen > 0 && first.SeqLen > host.Config.MaxSeqLen)
                throw new CliUsageException($"--seq-len {first.SeqLen} exceeds the model's context of {host.Config.MaxSeqLen}");
            var data = TrainingData.Load(tok, first.Data, first.EvalData, first.EvalFraction, first.SeqLen, first.Seed);
            Console.Error.WriteLine($"data: {data.TrainDocuments} training documents → {data.Train.Count} windows of {first.SeqLen} tokens; {data.EvalDocuments} held-out documents");
            if (data.Eval.Count == 0) Console.Error.WriteLine("note: no held-out data (--eval-fraction 0 and no --eval-data): the loss columns and curves stay empty");
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            var compared = new List<ComparedRun>();
            var failed = new List<string>();
            for (int i = 0; i < runs.Count; i++)
            {
                var (spec, o) = runs[i];
                string title = $"[{i + 1}/{runs.Count}] {spec.Label}";
                try
                {
                    if (resuming && TrainCheckpoint.LatestStep(o.Out) >= o.Steps && File.Exists(Path.Combine(o.Out, "summary.json")))
                        Console.Error.WriteLine($"{title}: finished earlier, kept as it is");
                    else
                        TrainCommand.Run(ctx, host, o with { Resume = resuming && TrainCheckpoint.Steps(o.Out).Count > 0 }, data, title);
                    compared.Add(ComparedRun.Read(spec.Label, o.Quant.Type, o.Out));
                }
                catch (Exception e) when (CliApp.UserError(e) is { } message)
                {
                    // One method failing (out of memory, a device path it lacks, a diverging loss) leaves the others to compare.
                    Console.Error.WriteLine($"error: {spec.Label}: {message}");
                    failed.Add($"{spec.Label}: {message}");
                }
            }
            if (compared.Count == 0) throw new CliUsageException("no method finished: " + string.Join("; ", failed));
            var g = first.Batch * first.SeqLen * first.GradAccum;
            var result = new MethodComparison(string.Create(CultureInfo.InvariantCulture,
                $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(parse.GetValue(train.Model.Model)!))}, {steps} steps of {g} tokens ({first.Batch} × {first.SeqLen}{(first.GradAccum > 1 ? $" × {first.GradAccum}" : "")}), lr {first.Lr:G3} {first.Schedule.ToString().ToLowerInvariant()}, seed {first.Seed}, {ctx.Caps.Name}"), compared)
            {
                Failed = failed,
            };
            result.Write(outDir);
            Console.WriteLine(result.Setup);
            Console.WriteLine();
            Console.Write(result.Markdown());
            foreach (var f in failed) Console.WriteLine($"failed: {f}");
            Console.WriteLine();
            Console.WriteLine($"{MethodComparison.MarkdownFile}, {MethodComparison.CsvFile}, {MethodComparison.JsonFile} and {MethodComparison.PlotFile} (held-out loss curves) written to {Path.GetFullPath(outDir)}; each method's run is in its own folder there");
            return failed.Count == 0 ? 0 : 1;
        });
        return cmd;
    }
}
