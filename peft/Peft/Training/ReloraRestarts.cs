// ReLoRA (Lialin et al., "ReLoRA: High-Rank Training Through Low-Rank Updates"): every N optimizer steps the LoRA
// update s·B·A is merged into the frozen base, the base is re-quantized to its own format, A and B are re-initialized,
// AdamW's moments are magnitude-pruned and the learning rate re-warms (the jagged schedule, TrainOptions.LearningRate).
// The merge adds to a full-precision copy of the targeted linears kept in host memory (as Axolotl's QLoRA ReLoRA does
// from its master copy), or, with --relora-merge-from dequantized, to the base dequantized from the device (as the
// official code's 4-bit path does: re-quantization errors then compound, and the summary reports a bound on them).
// A checkpoint carries every finished cycle's adapter; resuming replays the merges, which are deterministic, so the
// rebuilt base is bit-identical to the one the interrupted run trained on.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>What a ReLoRA merge adds the LoRA update to.</summary>
public enum ReloraMergeFrom
{
    /// <summary>A full-precision copy of the targeted linears in host memory: W0 + Σ s·B·A, quantized afresh each restart.</summary>
    Original,

    /// <summary>The base dequantized from the device (no host copy): errors of successive re-quantizations accumulate.</summary>
    Dequantized,
}

/// <summary>The --relora-* options.</summary>
public sealed record ReloraOptions
{
    /// <summary>Merge and restart after every this many optimizer steps (not after the last step).</summary>
    public required int Every { get; init; }

    /// <summary>Steps over which the learning rate re-warms from 0 after a restart; null: a tenth of <see cref="Every"/> (at least 1).</summary>
    public int? Warmup { get; init; }

    public ReloraMergeFrom MergeFrom { get; init; } = ReloraMergeFrom.Original;

    /// <summary>
    /// Share of each AdamW moment tensor zeroed at a restart, smallest magnitudes first (the reference's magnitude
    /// pruning; 0.9 is what its README and Axolotl use; 1 resets the optimizer, 0 keeps it). Unlike the reference, an
    /// entry whose second moment is pruned loses its first moment too: alone it would step by m / ε, which the
    /// reference's 50–100-step re-warm from a learning rate of 0 hides and a short re-warm does not.
    /// </summary>
    public double PruneRatio { get; init; } = 0.9;

    public int RestartWarmup => Warmup ?? Math.Max(1, Every / 10);

    public void Validate(AdapterConfig adapter, BaseQuant quant)
    {
        if (Every < 1) throw new SettingException($"{TrainSettings.ReloraEvery} must be ≥ 1, got {Every}");
        if (Warmup is < 0) throw new SettingException($"{TrainSettings.ReloraWarmup} must be ≥ 0, got {Warmup}");
        if (RestartWarmup > Every) throw new SettingException($"{TrainSettings.ReloraWarmup} {RestartWarmup} is longer than a cycle ({TrainSettings.ReloraEvery} {Every})");
        if (!(PruneRatio >= 0 && PruneRatio <= 1)) throw new SettingException($"{TrainSettings.ReloraPrune} must be in [0, 1], got {PruneRatio}");
        if (adapter.Method != PeftMethod.Lora)
            throw new SettingException($"{TrainSettings.ReloraEvery} merges a low-rank update into the base: it needs {AdapterSettings.Method} lora, not {adapter.Method.CliName}");
        if (quant.IsInt4) throw new SettingException($"{TrainSettings.ReloraEvery} re-quantizes the merged base: use an nf4, nf4-dq, fp4, fp4-dq or fp32 (none) base, not int4");
    }

    /// <summary>The jagged schedule's factor at <paramref name="step"/>: a linear ramp (step − restart) / warmup over the steps after each restart, else 1.</summary>
    public double RewarmFactor(long step)
    {
        long restart = (step - 1) / Every * Every;   // the restart that happened after step `restart`, 0 before the first
        if (restart == 0 || RestartWarmup == 0) return 1;
        long since = step - restart;
        return since >= RestartWarmup ? 1 : since / (double)RestartWarmup;
    }

    /// <summary>
    /// Zeroes the entries of <paramref name="values"/> whose magnitude is at most the <paramref name="ratio"/>-quantile of
    /// the magnitudes (linear interpolation between order statistics, as torch.quantile), as the reference's
    /// magnitude pruning does; ratio 0 keeps everything.
    /// </summary>
    public static void MagnitudePrune(float[] values, double ratio)
    {
        if (ratio <= 0 || values.Length == 0) return;
        var mags = values.Select(MathF.Abs).ToArray();
        Array.Sort(mags);
        double pos = ratio * (mags.Length - 1);
        int lo = (int)Math.Floor(pos);
        int hi = Math.Min(lo + 1, mags.Length - 1);
        float threshold = (float)(mags[lo] + (pos - lo) * (mags[hi] - mags[lo]));
        for (int i = 0; i < values.Length; i++)
            if (!(MathF.Abs(values[i]) > threshold)) values[i] = 0;
    }
}

/// <summary>One merge-and-restart: when, and the base's quantization error against the exact merged weights.</summary>
public sealed record ReloraRestart(int Step, int Cycle, double ErrorNorm, double RelativeError, double AccumulatedBound);

/// <summary>Merges, re-quantizes and restarts the device model's targeted linears (see the file comment).</summary>
public sealed class ReloraRestarts
{
    public const string CyclesFile = "relora_cycles.safetensors";

    private readonly DeviceLlama _model;
    private readonly LoadedModel _host;
    private readonly AdapterConfig _adapter;
    private readonly ReloraOptions _o;
    private readonly Dictionary<(int Layer, TargetModule Kind), float[]> _master = [];   // [out, in] W0 + Σ s·B·A (Original only)
    private readonly List<AdapterWeights> _cycles = [];
    private readonly List<ReloraRestart> _restarts = [];

    public ReloraRestarts(DeviceLlama model, LoadedModel host, AdapterConfig adapter, ReloraOptions options)
    {
        _model = model;
        _host = host;
        _adapter = adapter;
        _o = options;
        if (options.MergeFrom == ReloraMergeFrom.Original)
            for (int l = 0; l < model.Config.NLayers; l++)
                foreach (var t in adapter.Targets)
                    _master[(l, t)] = (float[])ModelTensors.Linear(host.Weights.Layers[l], t).Clone();
    }

    public IReadOnlyList<ReloraRestart> Restarts => _restarts;
    public int Cycles => _cycles.Count;

    /// <summary>Host bytes of the full-precision copy (0 when merging into the dequantized base).</summary>
    public long MasterBytes => _master.Values.Sum(w => 4L * w.LongLength);

    /// <summary>One line for the log and the summary: where merges go.</summary>
    public string Description => _o.MergeFrom == ReloraMergeFrom.Original
        ? $"ReLoRA every {_o.Every} steps (re-warm {_o.RestartWarmup} steps, moments pruned {_o.PruneRatio:0.###}): merges go into a full-precision copy of the targeted linears in host memory ({MasterBytes / 1048576.0:F1} MiB), re-quantized to {_model.Quant.Type} from it at each restart"
        : $"ReLoRA every {_o.Every} steps (re-warm {_o.RestartWarmup} steps, moments pruned {_o.PruneRatio:0.###}): merges go into the base dequantized from the device (no full-precision copy); re-quantization errors accumulate and are reported";

    /// <summary>
    /// True when a run resumed at <paramref name="step"/> still owes the restart of that step: it had ended there (no
    /// restart after the last step) and --steps was raised.
    /// </summary>
    public bool Pending(int step, int totalSteps) => Cycles < step / _o.Every && Due(step, totalSteps);

    /// <summary>True when the step just finished ends a cycle (never after the last step: its adapter is the final one).</summary>
    public bool Due(int step, int totalSteps) => step % _o.Every == 0 && step < totalSteps;

    /// <summary>
    /// After optimizer step <paramref name="step"/>: merges the current adapter into the base and re-quantizes it, then
    /// re-initializes A and B (seeded by the run seed and the cycle) and magnitude-prunes the optimizer moments.
    /// </summary>
    public ReloraRestart Restart(int step, TrainableParameters p, int seed)
    {
        var restart = Merge(p.ToHost(_adapter), step);
        var c = _model.Config;
        foreach (var (spec, data) in _adapter.Method.InitialValues(c, _adapter, CycleSeed(seed, _cycles.Count)))
            p.ByName[spec.Name].Param.Upload<float>(data);
        var state = p.OptimizerState();
        foreach (var (m, v) in state.Values)
        {
            ReloraOptions.MagnitudePrune(m, _o.PruneRatio);
            ReloraOptions.MagnitudePrune(v, _o.PruneRatio);
            // A first moment left without its second moment would step by m / ε: the entry restarts as a whole.
            for (int i = 0; i < v.Length; i++)
                if (v[i] == 0) m[i] = 0;
        }
        p.LoadOptimizerState(state);
        return restart;
    }

    /// <summary>The initialization seed of cycle <paramref name="cycle"/> (0 = the run's own initialization).</summary>
    public static int CycleSeed(int seed, int cycle) => unchecked(seed + cycle * 1_000_003);

    /// <summary>Merges one cycle's adapter into the device base (re-quantizing each targeted linear) and records the error.</summary>
    private ReloraRestart Merge(AdapterWeights cycle, int step)
    {
        var c = _model.Config;
        double errSq = 0, normSq = 0;
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in _adapter.Targets)
            {
                var linear = _model.Layers[l].Linear(t);
                float[] baseW = _o.MergeFrom == ReloraMergeFrom.Original ? _master[(l, t)] : linear.DownloadDequantized();
                var delta = AdapterMerge.Delta(cycle, c, l, t);
                var merged = new float[baseW.Length];
                for (int i = 0; i < merged.Length; i++) merged[i] = (float)(baseW[i] + delta[i]);
                linear.ReplaceWeight(merged, _model.Quant);
                if (_o.MergeFrom == ReloraMergeFrom.Original) _master[(l, t)] = merged;
                var held = _model.Quant.IsQuantized ? linear.DownloadDequantized() : merged;
                for (int i = 0; i < merged.Length; i++)
                {
                    double e = (double)merged[i] - held[i];
                    errSq += e * e;
                    normSq += (double)merged[i] * merged[i];
                }
            }
        _cycles.Add(OnlyLowRank(cycle));
        double err = Math.Sqrt(errSq);
        // With a master copy the base is one quantization away from the exact merged weights; without one, each
        // restart's re-quantization error adds to the drift from W0 + Σ ΔW (bounded by the sum of the errors).
        double bound = _o.MergeFrom == ReloraMergeFrom.Original ? err : (_restarts.Count > 0 ? _restarts[^1].AccumulatedBound : 0) + err;
        var r = new ReloraRestart(step, _cycles.Count, err, normSq > 0 ? err / Math.Sqrt(normSq) : 0, bound);
        _restarts.Add(r);
        return r;
    }

    private AdapterWeights OnlyLowRank(AdapterWeights a)
    {
        var w = new AdapterWeights(_adapter);
        foreach (var (name, t) in a.Tensors) w.Tensors[name] = new HostTensor((float[])t.Data.Clone(), t.Shape);
        return w;
    }

    /// <summary>The finished cycles' adapters, for the checkpoint (<see cref="CyclesFile"/>): "cycleNNNN.{tensor}".</summary>
    public IEnumerable<SafeTensorsWriter.Entry> CycleEntries() =>
        _cycles.SelectMany((a, i) => a.Tensors.Select(kv => SafeTensorsWriter.FromFloat32(CycleName(i + 1, kv.Key), kv.Value.Shape, kv.Value.Data)));

    private static string CycleName(int cycle, string tensor) => string.Create(CultureInfo.InvariantCulture, $"cycle{cycle:D4}.{tensor}");

    public JsonObject ToJson() => new()
    {
        ["every"] = _o.Every,
        ["restart_warmup"] = _o.RestartWarmup,
        ["prune_ratio"] = _o.PruneRatio,
        ["merge_from"] = _o.MergeFrom == ReloraMergeFrom.Original ? "original" : "dequantized",
        ["description"] = Description,
        ["cycles"] = _cycles.Count,
        ["restarts"] = new JsonArray([.. _restarts.Select(r => (JsonNode)new JsonObject
        {
            ["step"] = r.Step,
            ["cycle"] = r.Cycle,
            ["quant_error_norm"] = r.ErrorNorm,
            ["quant_error_relative"] = r.RelativeError,
            ["accumulated_error_bound"] = r.AccumulatedBound,
        })]),
    };

    /// <summary>
    /// Rebuilds the base of a checkpoint at <paramref name="step"/> (folder <paramref name="folder"/>): reads every
    /// finished cycle's adapter and replays the merges in order, exactly as the interrupted run did them. The cycle count
    /// is the state's <c>relora.cycles</c> (a run finished and resumed with a higher --steps did not restart at its old
    /// last step), checked against the restarts --relora-every allows by then.
    /// </summary>
    public void Restore(string folder, int step)
    {
        if (_cycles.Count > 0) throw new InvalidOperationException("ReLoRA restarts are restored once, before training");
        string statePath = Path.Combine(folder, TrainCheckpoint.StateFile);
        int cycles;
        using (var doc = JsonFields.ParseFile(statePath))
        {
            if (!doc.RootElement.TryGetProperty("relora", out var relora) || relora.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(statePath, "relora", "missing: the checkpoint was not written by a ReLoRA run (drop --relora-every or use its own --out)");
            cycles = JsonFields.Int(statePath, relora, "cycles") ?? throw new ModelFormatException(statePath, "relora.cycles", "missing");
        }
        // A run that ended on a cycle boundary did not restart there (its last step); raising --steps makes it Pending.
        if (cycles != step / _o.Every && !(cycles == step / _o.Every - 1 && step % _o.Every == 0))
            throw new ModelFormatException(statePath, "relora.cycles", $"{cycles} restarts do not fit step {step} with --relora-every {_o.Every}");
        if (cycles == 0) return;
        string file = Path.Combine(folder, CyclesFile);
        if (!File.Exists(file)) throw new ModelFormatException(file, CyclesFile, $"missing: the checkpoint at step {step} is past {cycles} ReLoRA restart(s) and needs their adapters");
        var c = _model.Config;
        using var st = SafeTensorsFile.Open(file);
        for (int cycle = 1; cycle <= cycles; cycle++)
        {
            var a = new AdapterWeights(_adapter);
            foreach (var spec in _adapter.Method.Parameters(c, _adapter))
            {
                string name = CycleName(cycle, spec.Name);
                if (!st.Tensors.ContainsKey(name)) throw new ModelFormatException(file, name, $"missing: ReLoRA cycle {cycle} of {cycles} (is the adapter configuration the run's own?)");
                var data = st.ReadFloat32(name);
                if (data.LongLength != spec.Count) throw new ModelFormatException(file, name, $"holds {data.LongLength} values, the configuration needs {spec.Count}");
                a.Tensors[spec.Name] = new HostTensor(data, spec.Shape);
            }
            Merge(a, cycle * _o.Every);
        }
    }

    /// <summary>
    /// The final artifacts of a finished run in <paramref name="outDir"/>: <c>relora-base/</c>, the base the last
    /// cycle's adapter (the run's adapter) was trained on, and <c>merged/</c>, that base with the adapter merged — both
    /// Hugging Face safetensors folders in float32. Returns the two paths.
    /// </summary>
    public (string Base, string Merged) WriteFinal(string outDir, AdapterWeights lastCycle)
    {
        var weights = ModelTensors.WithLinears(_host.Weights, (l, t, w) =>
            !_adapter.Targets.Contains(t) ? w
            : _o.MergeFrom == ReloraMergeFrom.Original ? _master[(l, t)]
            : _cycles.Count == 0 ? w : _model.Layers[l].Linear(t).DownloadDequantized());
        var model = _host with { Weights = weights };
        string basePath = Path.Combine(outDir, "relora-base"), mergedPath = Path.Combine(outDir, "merged");
        Exporter.Export(model, null, new ExportOptions { Format = ExportFormat.Safetensors, MergeFrom = MergeFrom.Original, OutPath = basePath, Force = true });
        Exporter.Export(model, lastCycle, new ExportOptions { Format = ExportFormat.Safetensors, MergeFrom = MergeFrom.Original, OutPath = mergedPath, Force = true });
        return (basePath, mergedPath);
    }
}
