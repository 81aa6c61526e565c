// Proves a fit plan on the device: trains a random-weight model with the plan's longest sequence and switches through
// the real trainer under a memory budget. A device too small for the whole model runs the first layers with the real
// embedding and classifier, under the budget less the modelled bytes of the layers left out; where a 4-bit table of the
// real vocabulary exceeds the device's largest storage binding, the vocabulary is cut to fit and that difference is
// modelled too.
using System.Diagnostics;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

public sealed record PlanCheckResult(
    TrainSetup Full,
    int Layers,
    int Vocab,
    long Budget,
    long SliceBudget,
    long LeftOutBytes,
    long MeasuredReservedBytes,
    long MeasuredLiveBytes,
    IReadOnlyDictionary<MemoryCategory, long> MeasuredByCategory,
    long MeasuredHostBytes,
    long ModelledSliceBytes,
    double TokensPerSecond,
    double SecondsPerStep,
    double FinalLoss)
{
    public bool WholeModel => Layers == Full.Config.NLayers && Vocab == Full.Config.VocabSize;
    /// <summary>Measured device peak (reserved) plus the modelled bytes of the layers that did not run.</summary>
    public long ExtrapolatedBytes => MeasuredReservedBytes + LeftOutBytes;
    public bool Honoured => MeasuredReservedBytes <= SliceBudget && ExtrapolatedBytes <= Budget;
}

public static class PlanCheck
{
    /// <summary>
    /// Trains <paramref name="steps"/> steps of the plan's longest sequence (batch 1) on random weights with the first
    /// <paramref name="layers"/> layers (all when null or enough), with the budget enforced by the arena.
    /// </summary>
    public static PlanCheckResult Run(Plan plan, int? layers, int steps, RuntimeOptions runtime, string workDir, Action<string>? log = null,
        Action<StepReport>? onStep = null)
    {
        var fit = plan.MaxSeq ?? throw new DeviceMemoryBudgetException("the plan", MemoryCategory.Weights, 0, (ulong)plan.Budget, new MemoryAccounting(), plan.Message);
        var full = fit.Option.Apply(plan.Base) with { Batch = 1, SeqLen = fit.Value };
        var c = full.Config;
        int n = Math.Clamp(layers ?? c.NLayers, 1, c.NLayers);
        int vocab = c.VocabSize;
        if (full.Embeddings == EmbeddingFormat.Nf4)
        {
            ulong binding;
            using (var probe = new VulkanContext(runtime with { Validation = false })) binding = probe.Caps.MaxBindingBytes;
            long most = (long)(binding * 2 / (ulong)c.Dim) / 64 * 64;   // 4-bit codes of [vocab, dim] in one binding
            if (vocab > most)
            {
                log?.Invoke($"a {vocab} × {c.Dim} 4-bit table exceeds this device's largest binding ({ByteSize.Format(binding)}): the check runs {most} tokens of vocabulary");
                vocab = (int)most;
            }
        }
        var slice = full with { Config = ModelCatalog.Slice(c, n, vocab) };
        var fullEst = MemoryModel.Estimate(full);
        var sliceEst = MemoryModel.Estimate(slice);
        long leftOut = fullEst.PeakBytes - sliceEst.PeakBytes;
        long sliceBudget = plan.Budget - leftOut;
        log?.Invoke($"checking the plan: {n} of {c.NLayers} layers, vocabulary {vocab} of {c.VocabSize}, {full.SeqLen} tokens, budget {ByteSize.Format(sliceBudget)}" +
                    (leftOut > 0 ? $" (= {ByteSize.Format(plan.Budget)} less {ByteSize.Format(leftOut)} modelled for what is left out)" : ""));

        using var ctx = new VulkanContext(runtime with { MemoryBudget = (ulong)sliceBudget });
        slice = slice.OnDevice(ctx);
        log?.Invoke("generating random weights...");
        var weights = ModelCatalog.RandomWeights(slice.Config, seed: 17);
        log?.Invoke($"loading ({full.Quant} base{(full.Embeddings == EmbeddingFormat.Nf4 ? ", nf4-dq embedding and classifier" : "")})...");
        var eq = full.Embeddings == EmbeddingFormat.Nf4 ? BaseQuant.Parse("nf4-dq") : null;
        using var model = DeviceLlama.Load(ctx, slice.Config, weights, full.Quant, embeddingQuant: eq);
        weights = null!;   // the host copy is not needed past loading; peaks include the loading

        var rng = new Random(23);
        TrainWindow Window()
        {
            var ids = new int[full.SeqLen + 1];
            for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(vocab);
            return new TrainWindow(ids[..^1], ids[1..]);
        }
        var data = TrainingData.FromWindows([.. Enumerable.Range(0, steps).Select(_ => Window())], []);
        var options = new TrainOptions
        {
            Data = "random tokens",
            Adapter = full.ToAdapterConfig(),
            Quant = full.Quant, EmbeddingQuant = eq ?? BaseQuant.None, Steps = steps, Batch = 1, SeqLen = full.SeqLen, Lr = 1e-4f,
            Checkpointing = full.Checkpointing, LogitRows = full.LogitRows, OffloadCheckpoints = full.OffloadCheckpoints, OptimizerOnHost = full.OptimizerOnHost,
            Out = workDir,
        };
        var sw = Stopwatch.StartNew();
        using var trainer = new Trainer(ctx, model, options, data);
        // Every buffer of the step is allocated up front: this is (within kernel scratch) the step's peak.
        log?.Invoke($"allocated: {ByteSize.Format(ctx.Arena.Accounting.ReservedBytes)} of device memory reserved ({ByteSize.Format(ctx.Arena.Accounting.LiveBytes)} live) " +
                    $"of the {ByteSize.Format(sliceBudget)} budget, {ByteSize.Format(ctx.HostArena.Accounting.LiveBytes)} in host memory; training...");
        if (log != null)
            trainer.PhaseProgress = (phase, done, total) => log($"  {phase} {done}/{total} ({sw.Elapsed:h\\:mm\\:ss})");
        var summary = trainer.Run(onStep);
        var acc = ctx.Arena.Accounting;
        return new PlanCheckResult(full, n, vocab, plan.Budget, sliceBudget, leftOut, acc.PeakReservedBytes, acc.PeakLiveBytes, acc.PeakByCategory(),
            ctx.HostArena.Accounting.PeakLiveBytes, sliceEst.PeakBytes, summary.TokensPerSecond, sw.Elapsed.TotalSeconds / steps, summary.FinalTrainLoss);
    }
}
