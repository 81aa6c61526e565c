// The training loop: micro-batches with gradient accumulation, global-norm clipping, AdamW with warmup and a schedule,
// held-out evaluation, checkpoints (TrainCheckpoint: durable, checksummed folders) and a bit-exact resume, NaN/Inf
// guards, device-loss and write-failure errors that point at the intact checkpoint, metrics.csv, loss.svg and
// summary.json in the output directory. Steps run without host waits: losses and gradient norms collect in a device
// status ring that the host reads once per stretch of steps (see StatusRingSteps).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Reports;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>What one optimizer step reports.</summary>
public sealed record StepReport(int Step, double Loss, double Lr, double GradNorm, double TokensPerSecond, double? EvalLoss);

public sealed record TrainSummary(double FinalTrainLoss, double? InitialEvalLoss, double? EvalLoss, double TokensPerSecond, double WallSeconds,
    long PeakDeviceBytes, IReadOnlyDictionary<MemoryCategory, long> PeakByCategory, int Steps, long TrainableParameters)
{
    /// <summary>Device memory reserved in arena blocks at the peak (what the --memory-budget limits).</summary>
    public long PeakReservedBytes { get; init; }
    /// <summary>Host memory of offloaded state at the peak (layer inputs, optimizer moments).</summary>
    public long PeakHostBytes { get; init; }
}

/// <summary>Training stopped because the loss or a gradient was not finite.</summary>
public sealed class NonFiniteLossException(SettingMessage detail) : Exception(detail.ToString()), ISettingError
{
    /// <summary>The message with the settings to change (the command line spells them as flags).</summary>
    public SettingMessage Detail { get; } = detail;
}

public sealed class Trainer : IDisposable
{
    /// <summary>Without --checkpointing, checkpointing switches on above this many base linear parameters.</summary>
    public const long AutoCheckpointingLinearParameters = 200_000_000;

    public const string StateFile = TrainCheckpoint.StateFile;
    public const string OptimizerFile = TrainCheckpoint.OptimizerFile;

    private readonly VulkanContext _ctx;
    private readonly DeviceLlama _model;
    private readonly LlamaConfig _config;
    private readonly TrainOptions _o;
    private readonly TrainingData _data;
    private readonly TrainableParameters _params;
    private readonly ITrainableAdapter _lora;
    private readonly TrainStep _step;
    private readonly List<(int Step, double Loss)> _trainCurve = [];
    private readonly List<(int Step, double Loss)> _evalCurve = [];
    private readonly List<string> _csv = [];
    private readonly ReloraRestarts? _relora;
    private int _done;

    /// <summary>
    /// A trainer of <paramref name="model"/>; <paramref name="host"/>, the host model it was loaded from, is needed by
    /// ReLoRA (its full-precision copy and the merged export).
    /// </summary>
    public Trainer(VulkanContext ctx, DeviceLlama model, TrainOptions options, TrainingData data, LoadedModel? host = null)
    {
        options.Validate();
        if (data.Train.Count == 0) throw new FormatException($"{options.Data}: no training window (is the data empty?)");
        _ctx = ctx;
        _model = model;
        _config = model.Config;
        _o = options;
        _data = data;
        Checkpointing = options.Checkpointing ?? (options.OffloadCheckpoints || model.LinearParams > AutoCheckpointingLinearParameters);
        RefuseIfTooBig(ctx, model, options, Checkpointing);
        _params = new TrainableParameters(ctx, withOptimizer: true, options.OptimizerOnHost ? MemoryPlace.Host : MemoryPlace.Device, options.ParameterLayout);
        options.Adapter.Method.Initialize(_params, _config, options.Adapter, options.Seed, model);
        options.Adapter.Method.InitializeFromBase(_params, model, options.Adapter, options.Seed);
        if (options.InitialAdapter is { } start)
            foreach (var (name, t) in start.Tensors)
            {
                if (!_params.ByName.TryGetValue(name, out var p) || p.Param.Count != t.Count)
                    throw new ArgumentException($"initial adapter tensor {name} is not a tensor of this configuration", nameof(options));
                p.Param.Upload<float>(t.Data);
            }
        _lora = options.Adapter.Method.CreateRuntime(ctx, _config, options.Adapter, _params, options.Batch * options.SeqLen);
        _step = new TrainStep(model, _lora, options.Batch, options.SeqLen, Checkpointing, options.LogitRows, options.OffloadCheckpoints);
        if (options.Relora is { } relora)
            _relora = new ReloraRestarts(model, host ?? throw new ArgumentException("ReLoRA needs the host model the device model was loaded from", nameof(host)),
                options.Adapter, relora);
    }

    /// <summary>Further sections of summary.json (LoftQ's errors).</summary>
    public JsonObject ExtraSummary { get; } = [];

    /// <summary>Where notes about the run go (ReLoRA's merge mode and restarts); null drops them.</summary>
    public Action<string>? Log { get; set; }

    /// <summary>ReLoRA's restarts so far (null without --relora-every).</summary>
    public ReloraRestarts? Relora => _relora;

    public bool Checkpointing { get; }

    /// <summary>
    /// Steps the device runs before the host reads their losses and gradient norms (one wait per stretch): reports,
    /// metrics.csv rows and the NaN/Inf check come in stretches of at most this many steps, as many as the previous
    /// stretch's time per step fits in <see cref="StatusReadInterval"/> (the first step is read alone), and always at an
    /// evaluation, a checkpoint, a ReLoRA restart and the last step.
    /// </summary>
    public const int StatusRingSteps = 16;

    /// <summary>How long a stretch of steps between status reads should take (steps slower than this are read one by one).</summary>
    public TimeSpan StatusReadInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Values per step in <see cref="Status"/>: Σ grad², then one loss sum per micro-batch.</summary>
    private int StatusWidth => 1 + _o.GradAccum;

    /// <summary>F32 [<see cref="StatusRingSteps"/> · (1 + micro-batches)]: per pending step, Σ grad² then the micro-batch loss sums.</summary>
    private DeviceTensor Status => _status ??= DeviceTensor.Create(_ctx, "train.step_status", DType.F32, [StatusRingSteps * StatusWidth], MemoryCategory.Workspace);
    private DeviceTensor? _status;

    /// <summary>Per-phase progress of each step (see <see cref="TrainStep.Progress"/>); null reports steps only.</summary>
    public Action<string, int, int>? PhaseProgress { get => _step.Progress; set => _step.Progress = value; }

    /// <summary>
    /// Refuses up front, with the fit planner's advice, a run whose analytic footprint (what TrainStep, the adapter and
    /// the evaluation runner will allocate, on top of what is live now) exceeds the arena's memory budget.
    /// </summary>
    private static void RefuseIfTooBig(VulkanContext ctx, DeviceLlama model, TrainOptions o, bool checkpointing)
    {
        if (o.Adapter.Method.NotPlanned != null) return;
        var setup = o.Adapter.Method.SetupFor(new Planning.TrainSetup
        {
            Config = model.Config, Method = o.Adapter.Method, Quant = o.Quant,
            Embeddings = model.EmbeddingQuant.IsQuantized ? Planning.EmbeddingFormat.Nf4 : Planning.EmbeddingFormat.Fp32, Batch = o.Batch, SeqLen = o.SeqLen, Checkpointing = checkpointing, LogitRows = o.LogitRows,
            OffloadCheckpoints = o.OffloadCheckpoints, OptimizerOnHost = o.OptimizerOnHost,
        }.OnDevice(ctx), o.Adapter);
        var est = Planning.MemoryModel.Estimate(setup);
        var acc = ctx.Arena.Accounting;
        long more = est.TotalBytes - est[MemoryCategory.Weights];
        if (acc.LiveBytes + more <= (long)ctx.Arena.Budget) return;
        var plan = Planning.FitPlanner.Make(setup, (long)ctx.Arena.Budget);
        throw new DeviceMemoryBudgetException($"training step ({o.Batch} × {o.SeqLen} tokens, checkpointing {(checkpointing ? "on" : "off")})",
            MemoryCategory.Activations, (ulong)more, ctx.Arena.Budget, acc, new SettingMessage($"the run cannot fit; the fit plan: {plan.Message}"));
    }

    public TrainableParameters Parameters => _params;
    public int CompletedSteps => _done;

    /// <summary>Loads the newest intact checkpoint of <paramref name="dir"/> (adapter, optimizer moments, step, curves).</summary>
    public void ResumeFrom(string dir, Action<string>? warn = null)
    {
        var c = TrainCheckpoint.Load(dir, _config, _params.ByName.Keys, warn,
            [.. _params.ByName.Values.Where(t => t.Grad != null).Select(t => t.Name)]);
        if (c.Step > _o.Steps) throw new ModelFormatException(Path.Combine(c.Folder, StateFile), "step", new SettingMessage($"checkpoint is at step {c.Step}, past {TrainSettings.Steps} {_o.Steps}"));
        foreach (var (name, t) in c.Adapter.Tensors)
        {
            var p = _params.ByName[name];
            if (p.Param.Count != t.Count) throw new ModelFormatException(c.Folder, name, $"has {t.Count} values, the configuration needs {p.Param.Count}");
            p.Param.Upload<float>(t.Data);
        }
        foreach (var (name, (m, v)) in c.Moments)
            if (m.Length != _params.ByName[name].Param.Count || v.Length != m.Length)
                throw new ModelFormatException(Path.Combine(c.Folder, OptimizerFile), name, $"optimizer moments hold {m.Length} and {v.Length} values, the configuration needs {_params.ByName[name].Param.Count}");
        _params.LoadOptimizerState(c.Moments.ToDictionary(kv => kv.Key, kv => kv.Value));
        if (_relora == null && File.Exists(Path.Combine(c.Folder, ReloraRestarts.CyclesFile)))
            throw new ModelFormatException(Path.Combine(c.Folder, ReloraRestarts.CyclesFile), "relora",
                new SettingMessage($"the checkpoint is a ReLoRA run's, whose base has merged cycles: resume it with its {TrainSettings.ReloraEvery}"));
        if (_relora != null)
        {
            _relora.Restore(c.Folder, c.Step);
            if (_relora.Pending(c.Step, _o.Steps)) _relora.Restart(c.Step, _params, _o.Seed);
        }
        _done = c.Step;
        _trainCurve.AddRange(c.TrainCurve);
        _evalCurve.AddRange(c.EvalCurve);
        _csv.AddRange(c.Csv);
    }

    /// <summary>Held-out mean NLL with the current adapter (null without held-out data).</summary>
    public double? Evaluate()
    {
        if (_data.Eval.Count == 0) return null;
        // The training step's own buffers run the held-out batches: evaluation adds nothing to the device peak.
        var windows = _data.Eval.Select(w => new Evaluator.Window(w.Inputs, w.Targets)).ToList();
        double total = 0;
        long count = 0;
        foreach (var (ids, targets, _, predicted) in Evaluator.Batches(windows, _step.Batch, _step.SeqLen))
        {
            total += _step.Loss(ids, targets);
            count += predicted;
        }
        return count == 0 ? null : total / count;
    }

    /// <summary>
    /// Trains from the current step to --steps (or until <paramref name="stopAfterStep"/>, as an interruption would),
    /// reporting each step; returns the summary.
    /// </summary>
    public TrainSummary Run(Action<StepReport>? onStep = null, int? stopAfterStep = null)
    {
        var wall = Stopwatch.StartNew();
        Directory.CreateDirectory(_o.Out);
        if (_relora != null) Log?.Invoke(_relora.Description);
        _ctx.Arena.Accounting.ResetPeaks();
        double? initialEval = _done == 0 ? Evaluate() : _evalCurve.FirstOrDefault().Loss;
        if (_done == 0 && initialEval is { } ie) _evalCurve.Add((0, ie));
        long tokens = 0;
        double lastLoss = _trainCurve.Count > 0 ? _trainCurve[^1].Loss : double.NaN;
        double? lastEval = _evalCurve.Count > 0 ? _evalCurve[^1].Loss : null;
        var trainClock = Stopwatch.StartNew();
        // Steps recorded on the device whose status rows (Σ grad², loss sums) the host has not read yet.
        var pending = new List<PendingStep>();
        var window = Stopwatch.StartNew();
        int stretch = 1;   // steps per status read: the first step alone, then as many as fit StatusReadInterval
        while (_done < _o.Steps && (stopAfterStep == null || _done < stopAfterStep))
        {
            int step = _done + 1;
            var micro = Enumerable.Range(0, _o.GradAccum).Select(m => _data.MicroBatch((long)_done * _o.GradAccum + m, _o.Batch, _o.Seed)).ToArray();
            int predicted = micro.Sum(mb => mb.Sum(w => w.Targets.Count(t => t >= 0)));
            double lr = _o.LearningRate(step);
            long row = (long)pending.Count * StatusWidth;
            try
            {
                TrainingFaults.Injected(step);
                for (int m = 0; m < micro.Length; m++)
                {
                    var ids = micro[m].SelectMany(w => w.Inputs).ToArray();
                    var targets = micro[m].SelectMany(w => w.Targets).ToArray();
                    uint seed = unchecked((uint)(_o.Seed * 7919 + step * 131 + m));
                    BasicOps.Copy(_step.RecordRun(ids, targets, 1f / Math.Max(predicted, 1), seed), Status.RowsView(row + 1 + m, 1));
                }
                if (FaultInjection.At("nan-grad", step)) PoisonGradient();
                BasicOps.Copy(_params.RecordGradNormSquared(), Status.RowsView(row, 1));
                // Clipping is decided on the device from the status row; a non-finite row leaves the state unchanged.
                _params.StepWithDeviceClip(step, new AdamWSettings(Lr: lr, WeightDecay: _o.WeightDecay), (float)_o.Clip, Status, row, StatusWidth);
                _params.ZeroGrads();
            }
            catch (Exception e) when (TrainingFaults.DuringStep(e, step, _o.Out, LastSavedStep()) is { } clear)
            {
                throw clear;
            }
            _done = step;
            tokens += (long)_o.Batch * _o.SeqLen * _o.GradAccum;
            pending.Add(new PendingStep(step, lr, predicted));
            bool reloraDue = _relora != null && _relora.Due(step, _o.Steps);
            bool evalDue = (_o.EvalEvery > 0 && step % _o.EvalEvery == 0) || step == _o.Steps;
            bool saveDue = (_o.SaveEvery > 0 && step % _o.SaveEvery == 0) || step == _o.Steps;
            bool last = step == _o.Steps || (stopAfterStep != null && step >= stopAfterStep);
            if (!(reloraDue || evalDue || saveDue || last || pending.Count >= stretch)) continue;

            // The one host wait of this stretch of steps: the status rows, checked before anything reads the state.
            var (done, seconds) = ReadStatus(pending, window);
            stretch = (int)Math.Clamp(StatusReadInterval.TotalSeconds * pending.Count / Math.Max(seconds, 1e-9), 1, StatusRingSteps);
            pending.Clear();
            lastLoss = done[^1].Loss;
            if (reloraDue)
            {
                var r = _relora!.Restart(step, _params, _o.Seed);
                Log?.Invoke(string.Create(CultureInfo.InvariantCulture,
                    $"ReLoRA restart {r.Cycle} after step {step}: merged and re-quantized, base error ‖W − Q‖ = {r.ErrorNorm:G4} ({r.RelativeError:P3} of ‖W‖){(_relora.MasterBytes == 0 ? $", accumulated ≤ {r.AccumulatedBound:G4}" : "")}"));
            }
            double? evalLoss = null;
            if (evalDue)
            {
                evalLoss = Evaluate();
                if (evalLoss is { } e) { _evalCurve.Add((step, e)); lastEval = e; }
            }
            foreach (var d in done)
            {
                double? ev = d.Step == step ? evalLoss : null;
                _csv.Add(string.Create(CultureInfo.InvariantCulture, $"{d.Step},{d.Loss:R},{(ev is { } v ? v.ToString("R", CultureInfo.InvariantCulture) : "")},{d.Lr:R},{d.TokensPerSecond:F1},{d.GradNorm:R}"));
                onStep?.Invoke(new StepReport(d.Step, d.Loss, d.Lr, d.GradNorm, d.TokensPerSecond, ev));
            }
            if (saveDue) SaveCheckpoint();
            window.Restart();   // evaluations and checkpoints are not step time
        }
        var acc = _ctx.Arena.Accounting;
        var summary = new TrainSummary(lastLoss, initialEval, lastEval, tokens / Math.Max(trainClock.Elapsed.TotalSeconds, 1e-9), wall.Elapsed.TotalSeconds,
            acc.PeakLiveBytes, acc.PeakByCategory(), _done, _params.TrainedCount)
        {
            PeakReservedBytes = acc.PeakReservedBytes,
            PeakHostBytes = _ctx.HostArena.Accounting.PeakLiveBytes,
        };
        if (_relora != null && _done == _o.Steps)
        {
            var (basePath, merged) = _relora.WriteFinal(_o.Out, _params.ToHost(_o.Adapter));
            Log?.Invoke($"ReLoRA: merged model in {merged}; the adapter of the last cycle pairs with the base in {basePath}");
        }
        WriteReports(summary);
        return summary;
    }

    private int LastSavedStep() => TrainCheckpoint.LatestStep(_o.Out);

    /// <summary>A step recorded on the device whose status row has not been read yet.</summary>
    private readonly record struct PendingStep(int Step, double Lr, int Predicted);

    /// <summary>
    /// Reads the status rows of <paramref name="pending"/> (one host wait), throws on the first non-finite loss or
    /// gradient norm (the device skipped that update; nothing was saved since) and adds the steps to the loss curve.
    /// Tokens/s is the stretch's average over <paramref name="window"/> (started with its first step, read after the wait):
    /// the steps ran back to back on the device. Returns the reports and the stretch's seconds.
    /// </summary>
    private (List<StepReport> Done, double Seconds) ReadStatus(List<PendingStep> pending, Stopwatch window)
    {
        float[] rows;
        try
        {
            rows = Status.RowsView(0, (long)pending.Count * StatusWidth).ToArray<float>();
        }
        catch (Exception e) when (TrainingFaults.DuringStep(e, pending[^1].Step, _o.Out, LastSavedStep()) is { } clear)
        {
            throw clear;
        }
        double seconds = window.Elapsed.TotalSeconds;
        double tps = (long)_o.Batch * _o.SeqLen * _o.GradAccum * pending.Count / Math.Max(seconds, 1e-9);
        var done = new List<StepReport>(pending.Count);
        for (int i = 0; i < pending.Count; i++)
        {
            var (step, lr, predicted) = pending[i];
            int row = i * StatusWidth;
            double lossSum = 0;
            for (int m = 0; m < _o.GradAccum; m++) lossSum += rows[row + 1 + m];
            double loss = lossSum / Math.Max(predicted, 1);
            double gradNorm = Math.Sqrt(rows[row]);
            if (!double.IsFinite(loss) || !double.IsFinite(gradNorm))
                throw new NonFiniteLossException(new SettingMessage($"step {step}: loss {loss}, gradient norm {gradNorm} — training stopped; the last checkpoint in {_o.Out} (step {LastSavedStep()}) is intact. Try a lower {TrainSettings.Lr} or {TrainSettings.Clip}."));
            _trainCurve.Add((step, loss));
            done.Add(new StepReport(step, loss, lr, gradNorm, tps, null));
        }
        return (done, seconds);
    }

    /// <summary>Test fault: one gradient element of the first trainable tensor becomes NaN (any method's parameters).</summary>
    private void PoisonGradient()
    {
        var first = _params.ByName.Values.First(t => t.Grad != null);
        var grad = new float[first.Grad!.Count];
        first.Grad.Download<float>(grad);
        grad[grad.Length / 2] = float.NaN;
        first.Grad.Upload<float>(grad);
    }

    /// <summary>
    /// Adapter, optimizer moments and trainer state as one durable, checksummed checkpoint (see <see cref="TrainCheckpoint"/>);
    /// a failed write leaves the previous checkpoints intact and says so.
    /// </summary>
    public void SaveCheckpoint()
    {
        var adapter = _params.ToHost(_o.Adapter);
        var entries = new List<SafeTensorsWriter.Entry>();
        foreach (var (name, (m, v)) in _params.OptimizerState())
        {
            entries.Add(SafeTensorsWriter.FromFloat32(name + ".m", _params.ByName[name].Shape, m));
            entries.Add(SafeTensorsWriter.FromFloat32(name + ".v", _params.ByName[name].Shape, v));
        }
        // LoRA's rank and alpha (the LoRA defaults for other methods, as the state has always recorded them).
        var lora = _o.Adapter.Settings as LoraSettings ?? new LoraSettings();
        var state = new JsonObject
        {
            ["format"] = "vkpeft-trainer-state/1",
            ["step"] = _done,
            ["micro_batches_consumed"] = (long)_done * _o.GradAccum,
            ["seed"] = _o.Seed,
            ["options"] = JsonSerializer.SerializeToNode(new
            {
                _o.Steps, _o.Batch, _o.SeqLen, _o.GradAccum, _o.Lr, _o.WeightDecay, _o.Warmup, Schedule = _o.Schedule.ToString().ToLowerInvariant(),
                _o.Clip, Checkpointing, _o.Seed, Method = _o.Adapter.Method.ToString().ToLowerInvariant(), lora.Rank, lora.Alpha,
                Quant = _o.Quant.Type, _o.Quant.Blocksize,
            }),
            ["train_curve"] = new JsonArray(_trainCurve.Select(p => (JsonNode)new JsonArray(p.Step, p.Loss)).ToArray()),
            ["eval_curve"] = new JsonArray(_evalCurve.Select(p => (JsonNode)new JsonArray(p.Step, p.Loss)).ToArray()),
            ["csv"] = new JsonArray(_csv.Select(s => (JsonNode)s).ToArray()),
        };
        if (_relora != null) state["relora"] = _relora.ToJson();
        int previous = LastSavedStep();
        try
        {
            TrainCheckpoint.Save(_o.Out, _done, adapter, _config, entries, state, _o.KeepCheckpoints,
                _relora == null ? null : new Dictionary<string, IEnumerable<SafeTensorsWriter.Entry>> { [ReloraRestarts.CyclesFile] = _relora.CycleEntries() });
        }
        catch (IOException e)
        {
            string intact = previous > 0 ? $"(step {previous}) is intact" : "does not exist yet";
            throw new SettingIOException(new SettingMessage(
                $"writing the checkpoint of step {_done} into {_o.Out} failed ({e.Message}); the previous checkpoint {intact}: free disk space, then rerun with {TrainSettings.Resume}"), e);
        }
    }

    private void WriteReports(TrainSummary s)
    {
        var csv = new List<string> { "step,train_loss,eval_loss,lr,tokens_per_second,grad_norm" };
        csv.AddRange(_csv);
        WriteAtomic(Path.Combine(_o.Out, "metrics.csv"), string.Join('\n', csv) + "\n");
        Plots.LossCurve(Path.Combine(_o.Out, "loss.svg"), _trainCurve, _evalCurve, $"{_o.Adapter.Method.ToString().ToUpperInvariant()} on {_o.Quant} base");
        var summary = new JsonObject
        {
            ["final_train_loss"] = double.IsFinite(s.FinalTrainLoss) ? s.FinalTrainLoss : null,
            ["initial_eval_loss"] = s.InitialEvalLoss,
            ["eval_loss"] = s.EvalLoss,
            ["tokens_per_second"] = s.TokensPerSecond,
            ["wall_seconds"] = s.WallSeconds,
            ["peak_device_bytes"] = s.PeakDeviceBytes,
            ["peak_device_bytes_by_category"] = new JsonObject(s.PeakByCategory.Select(kv => KeyValuePair.Create(kv.Key.ToString().ToLowerInvariant(), (JsonNode?)kv.Value))),
            ["peak_device_reserved_bytes"] = s.PeakReservedBytes,
            ["memory_budget_bytes"] = _ctx.Arena.Budget,
            ["peak_host_bytes"] = s.PeakHostBytes,
            ["steps"] = s.Steps,
            ["trainable_parameters"] = s.TrainableParameters,
            ["checkpointing"] = Checkpointing,
            ["offload_checkpoints"] = _o.OffloadCheckpoints,
            ["optimizer_on_host"] = _o.OptimizerOnHost,
            ["device"] = _ctx.Caps.Name,
        };
        if (_relora != null) summary["relora"] = _relora.ToJson();
        foreach (var (key, value) in ExtraSummary) summary[key] = value?.DeepClone();
        WriteAtomic(Path.Combine(_o.Out, "summary.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static void WriteAtomic(string path, string text) => DurableFile.WriteAllText(path, text);

    public void Dispose()
    {
        _status?.Dispose();
        _step.Dispose();
        (_lora as IDisposable)?.Dispose();
        _params.Dispose();
    }
}
