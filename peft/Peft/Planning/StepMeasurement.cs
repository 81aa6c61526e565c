// Runs real training steps (forward, backward, gradient norm, AdamW) of a TrainSetup on the device and records the
// peak bytes per memory category above what was live before, the time per step, and optionally the kernel profile.
using System.Diagnostics;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

public sealed record StepMeasurementResult(
    IReadOnlyDictionary<MemoryCategory, long> PeakByCategory,
    long PeakLiveBytes,
    IReadOnlyDictionary<MemoryCategory, long> HostPeakByCategory,
    double SecondsPerStep,
    int TimedSteps,
    string? Profile,
    double LastLoss,
    double DispatchesPerStep = 0,
    double SubmitsPerStep = 0,
    double WaitsPerStep = 0);

public static class StepMeasurement
{
    /// <summary>
    /// Loads <paramref name="weights"/> (shapes of <c>setup.Config</c>) and runs <paramref name="steps"/> optimizer steps
    /// on random tokens. The first step is a warm-up (pipelines compile) when more than one is run; time and the kernel
    /// profile come from the rest. Peaks are measured over loading plus the steps, relative to the bytes live before.
    /// <paramref name="timingOnly"/> runs a method the memory model does not cover yet (its peaks have no estimate to meet).
    /// A step is recorded as the trainer records it (clipping decided on the device, one host wait at its end); with
    /// <paramref name="hostReads"/> the loss and the gradient norm are read back within the step and the clip scale is
    /// formed on the host, as before (for comparison).
    /// </summary>
    public static StepMeasurementResult Run(VulkanContext ctx, TrainSetup setup, LlamaWeights weights, int steps = 2, bool profile = false,
        Action<string>? log = null, bool timingOnly = false, bool hostReads = false)
    {
        var gaps = setup.Unavailable().Where(g => !(timingOnly && ReferenceEquals(g, setup.Method.NotPlanned))).ToList();
        if (gaps.Count > 0)
            throw new SettingNotSupportedException(new SettingMessage($"cannot run: {SettingMessage.Join(", ", gaps)} not available in the runtime"));
        var c = setup.Config;
        var acc = ctx.Arena.Accounting;
        var hostAcc = ctx.HostArena.Accounting;
        var before = acc.CurrentByCategory();
        var hostBefore = hostAcc.CurrentByCategory();
        long liveBefore = acc.LiveBytes;
        log?.Invoke($"loading {c.NLayers} layer(s), vocabulary {c.VocabSize}, {setup.Quant}...");
        using var model = DeviceLlama.Load(ctx, c, weights, setup.Quant,
            embeddingQuant: setup.Embeddings == EmbeddingFormat.Nf4 ? BaseQuant.Parse("nf4-dq") : null);
        acc.ResetPeaks();   // the load-time quantization scratch is transient; the step's peak is what is asked here
        var adapter = setup.ToAdapterConfig();
        using var parameters = new TrainableParameters(ctx, withOptimizer: true, setup.OptimizerOnHost ? MemoryPlace.Host : MemoryPlace.Device);
        adapter.Method.Initialize(parameters, c, adapter, 7, model);
        var runtime = adapter.Method.CreateRuntime(ctx, c, adapter, parameters, setup.Batch * setup.SeqLen);
        try
        {
            using var step = new TrainStep(model, runtime, setup.Batch, setup.SeqLen, setup.Checkpointing, setup.LogitRows, setup.OffloadCheckpoints);
            using var status = DeviceTensor.Create(ctx, "measure.step_status", DType.F32, [2], MemoryCategory.Workspace);   // Σ grad², loss sum
            int rows = setup.Batch * setup.SeqLen;
            var rng = new Random(11);
            double seconds = 0, loss = 0;
            int timed = 0;
            long dispatches = 0, submits = 0, waits = 0;   // over the timed steps: the command stream's shape per step
            string? prof = null;
            bool wasProfiling = ctx.Commands.ProfileEnabled;
            for (int i = 0; i < steps; i++)
            {
                bool measure = steps == 1 || i > 0;
                var ids = new int[rows + 1];
                for (int k = 0; k < ids.Length; k++) ids[k] = rng.Next(c.VocabSize);
                if (measure && profile) { ctx.Commands.Profile.Clear(); ctx.Commands.ProfileEnabled = true; }
                log?.Invoke($"step {i + 1}/{steps}{(measure ? "" : " (warm-up)")}: {setup.Batch} × {setup.SeqLen} tokens...");
                ctx.Sync();
                long d0 = ctx.Commands.TotalDispatches, s0 = ctx.Commands.TotalSubmits, w0 = ctx.Commands.TotalWaits;
                var sw = Stopwatch.StartNew();
                if (hostReads)
                {
                    loss = step.Run(ids[..rows], ids[1..], 1f / rows, (uint)i);
                    double norm = parameters.GradNorm();
                    parameters.Step(i + 1, new AdamWSettings(Lr: 1e-4), norm > 1 ? (float)(1 / norm) : 1f);
                }
                else
                {
                    BasicOps.Copy(step.RecordRun(ids[..rows], ids[1..], 1f / rows, (uint)i), status.RowsView(1, 1));
                    BasicOps.Copy(parameters.RecordGradNormSquared(), status.RowsView(0, 1));
                    parameters.StepWithDeviceClip(i + 1, new AdamWSettings(Lr: 1e-4), 1f, status, 0, 2);
                }
                parameters.ZeroGrads();
                ctx.Sync();
                if (measure)
                {
                    seconds += sw.Elapsed.TotalSeconds;
                    timed++;
                    dispatches += ctx.Commands.TotalDispatches - d0;
                    submits += ctx.Commands.TotalSubmits - s0;
                    waits += ctx.Commands.TotalWaits - w0;
                }
                if (measure && profile) prof = ctx.Commands.Profile.Format();
                if (!hostReads) loss = status.ToArray<float>()[1];   // after the step's counters: read once the step is done
            }
            ctx.Commands.ProfileEnabled = wasProfiling;
            var peaks = acc.PeakByCategory().ToDictionary(kv => kv.Key, kv => kv.Value - before[kv.Key]);
            var hostPeaks = hostAcc.PeakByCategory().ToDictionary(kv => kv.Key, kv => kv.Value - hostBefore[kv.Key]);
            int n = Math.Max(timed, 1);
            return new StepMeasurementResult(peaks, acc.PeakLiveBytes - liveBefore, hostPeaks, seconds / n, timed, prof, loss / rows,
                (double)dispatches / n, (double)submits / n, (double)waits / n);
        }
        finally
        {
            (runtime as IDisposable)?.Dispose();
        }
    }
}
