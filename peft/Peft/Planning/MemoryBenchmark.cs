// `bench memory` logic: picks the largest layer-faithful slice of a model the device can hold, measures real training
// steps on it, sets the measured peaks next to the analytic model and extrapolates to the whole model per layer.
using System.Text.Json.Nodes;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

/// <summary>What was run: the first <see cref="Layers"/> layers with <see cref="Vocab"/> tokens of the full model.</summary>
public sealed record ModelSlice(int Layers, int Vocab, bool Whole, bool ReducedVocab);

public sealed record MemoryBenchResult(
    string Model,
    string Device,
    TrainSetup Full,
    MemoryEstimate FullEstimate,
    ModelSlice Slice,
    MemoryEstimate SliceEstimate,
    StepMeasurementResult Measured,
    IReadOnlyDictionary<MemoryCategory, long> Reported,
    double MeasuredTokensPerSecond,
    double FullModelTokensPerSecond,
    string Note)
{
    /// <summary>True when the whole model ran (every figure measured); false when extrapolated from a slice.</summary>
    public bool MeasuredWhole => Slice.Whole;
    public long PeakBytes => Reported.Values.Sum();
}

public static class MemoryBenchmark
{
    private static readonly int[] VocabSteps = [32000, 16000, 8000, 4000, 2000, 1000, 512];

    /// <summary>The largest slice whose analytic peak (step and load) stays within <paramref name="limit"/> bytes.</summary>
    public static ModelSlice ChooseSlice(TrainSetup full, long limit, int maxLayers)
    {
        var c = full.Config;
        bool Fits(int layers, int vocab) => MemoryModel.Estimate(full with { Config = ModelCatalog.Slice(c, layers, vocab) }).PeakBytes <= limit;
        if (Fits(c.NLayers, c.VocabSize)) return new ModelSlice(c.NLayers, c.VocabSize, true, false);
        for (int n = Math.Min(maxLayers, c.NLayers); n >= 1; n--)
            if (Fits(n, c.VocabSize)) return new ModelSlice(n, c.VocabSize, false, false);
        foreach (int v in VocabSteps.Where(v => v < c.VocabSize))
            if (Fits(1, v)) return new ModelSlice(1, v, false, true);
        throw new DeviceMemoryBudgetException($"one layer of {c.Dim}x{c.HiddenDim} at {full.Batch}x{full.SeqLen} tokens", MemoryCategory.Activations,
            (ulong)MemoryModel.Estimate(full with { Config = ModelCatalog.Slice(c, 1, 512) }).PeakBytes, (ulong)limit, new MemoryAccounting(),
            "even one layer with a 512-token vocabulary does not fit the benchmark's limit; use a shorter --seq-len or --batch");
    }

    /// <summary>Approximate FLOPs of one training step (linears forward, input gradient, recomputation; attention; classifier).</summary>
    public static double StepFlops(TrainSetup s)
    {
        var c = s.Config;
        double rows = (double)s.Batch * s.SeqLen;
        double lin = MemoryModel.LayerLinears(c).Sum(l => (double)l.Out * l.In);
        double passes = s.Checkpointing ? 3 : 2;
        double attn = 2.0 * s.Batch * s.SeqLen * (double)s.SeqLen * c.QDim * (passes + 2.5);
        return c.NLayers * (2 * lin * rows * passes + attn) + 4 * rows * c.VocabSize * (double)c.Dim;
    }

    public static MemoryBenchResult Run(VulkanContext ctx, string modelName, TrainSetup full, LlamaWeights? realWeights, long limit, int? maxLayers,
        int steps, Action<string>? log)
    {
        var fullEst = MemoryModel.Estimate(full);
        var slice = ChooseSlice(full, limit, maxLayers ?? full.Config.NLayers);
        var sliceSetup = full with { Config = ModelCatalog.Slice(full.Config, slice.Layers, slice.Vocab) };
        var sliceEst = MemoryModel.Estimate(sliceSetup);
        LlamaWeights weights;
        if (realWeights != null && slice.Whole) weights = realWeights;
        else if (realWeights != null && !slice.ReducedVocab)
            weights = new LlamaWeights
            {
                TokenEmbedding = realWeights.TokenEmbedding, Classifier = realWeights.Classifier, FinalNorm = realWeights.FinalNorm,
                RopeFreqFactors = realWeights.RopeFreqFactors, Layers = realWeights.Layers[..slice.Layers],
            };
        else
        {
            log?.Invoke($"generating random weights for {slice.Layers} layer(s)...");
            weights = ModelCatalog.RandomWeights(sliceSetup.Config);
        }
        var measured = StepMeasurement.Run(ctx, sliceSetup, weights, steps, profile: false, log);
        var reported = Enum.GetValues<MemoryCategory>().ToDictionary(cat => cat,
            cat => Math.Max(0, measured.PeakByCategory[cat] + fullEst[cat] - sliceEst[cat]));
        double tps = full.Batch * (double)full.SeqLen / measured.SecondsPerStep;
        double fullTps = tps * StepFlops(sliceSetup) / StepFlops(full);
        string note = slice.Whole
            ? "whole model measured"
            : $"measured on a slice of {slice.Layers} of {full.Config.NLayers} layers" +
              (slice.ReducedVocab ? $" with the vocabulary reduced from {full.Config.VocabSize} to {slice.Vocab} (real layer shapes)" : " with the real embedding and classifier") +
              "; whole-model figures = measured slice + analytic difference (per layer, vocabulary); whole-model tokens/s scaled by FLOPs";
        return new MemoryBenchResult(modelName, ctx.Caps.Name, full, fullEst, slice, sliceEst, measured, reported, tps, fullTps, note);
    }

    private static JsonObject Cats(IReadOnlyDictionary<MemoryCategory, long> d) =>
        new(d.Select(kv => KeyValuePair.Create(kv.Key.ToString().ToLowerInvariant(), (JsonNode?)kv.Value)));

    /// <summary>The --json object: peak_bytes, categories, measured, tokens_per_second, then details.</summary>
    public static JsonObject ToJson(MemoryBenchResult r)
    {
        var s = r.Full;
        return new JsonObject
        {
            ["model"] = r.Model,
            ["device"] = r.Device,
            ["peak_bytes"] = r.PeakBytes,
            ["categories"] = Cats(r.Reported),
            ["measured"] = r.MeasuredWhole,
            ["tokens_per_second"] = r.MeasuredWhole ? r.MeasuredTokensPerSecond : r.FullModelTokensPerSecond,
            ["tokens_per_second_measured_slice"] = r.MeasuredTokensPerSecond,
            ["note"] = r.Note,
            ["setup"] = new JsonObject
            {
                ["method"] = s.Method.ToString().ToLowerInvariant(), ["quant"] = s.Quant.Type, ["blocksize"] = s.Quant.Blocksize, ["rank"] = s.Rank,
                ["targets"] = string.Join(',', s.Targets.Select(t => t.ToString().ToLowerInvariant())), ["batch"] = s.Batch, ["seq_len"] = s.SeqLen,
                ["checkpointing"] = s.Checkpointing, ["logit_rows"] = s.LogitRows, ["offload_checkpoints"] = s.OffloadCheckpoints,
                ["optimizer_on_host"] = s.OptimizerOnHost,
            },
            ["host_bytes"] = r.FullEstimate.HostBytes,
            ["host_categories"] = Cats(r.FullEstimate.HostCategories),
            ["analytic"] = new JsonObject { ["peak_bytes"] = r.FullEstimate.TotalBytes, ["load_peak_bytes"] = r.FullEstimate.LoadPeakBytes, ["categories"] = Cats(r.FullEstimate.Categories) },
            ["slice"] = new JsonObject
            {
                ["layers"] = r.Slice.Layers, ["vocab"] = r.Slice.Vocab, ["whole_model"] = r.Slice.Whole, ["reduced_vocab"] = r.Slice.ReducedVocab,
                ["measured_peak_bytes"] = r.Measured.PeakLiveBytes, ["measured_categories"] = Cats(r.Measured.PeakByCategory),
                ["analytic_categories"] = Cats(r.SliceEstimate.Categories), ["seconds_per_step"] = r.Measured.SecondsPerStep,
            },
            ["comparisons"] = new JsonArray(Comparisons(s).Select(c => (JsonNode)new JsonObject
            {
                ["name"] = c.Name, ["available"] = c.Available, ["peak_bytes"] = c.Categories.Values.Sum(), ["categories"] = Cats(c.Categories),
            }).ToArray()),
        };
    }

    /// <summary>The same step under other formats and levers, analytic (available = the runtime can do it).</summary>
    public static IReadOnlyList<(string Name, bool Available, IReadOnlyDictionary<MemoryCategory, long> Categories)> Comparisons(TrainSetup s)
    {
        var list = new List<(string, bool, IReadOnlyDictionary<MemoryCategory, long>)>
        {
            ($"this run ({s.Quant.Type})", true, MemoryModel.Estimate(s).Categories),
            ("nf4 without double quant", true, MemoryModel.Estimate(s with { Quant = Engine.BaseQuant.Parse("nf4") }).Categories),
            ("fp32 base (--quant none)", true, MemoryModel.Estimate(s with { Quant = Engine.BaseQuant.None }).Categories),
            ($"checkpointing {(s.Checkpointing ? "off" : "on")}", true, MemoryModel.Estimate(s with { Checkpointing = !s.Checkpointing, OffloadCheckpoints = false }).Categories),
            ("logits in chunks of 32 rows", true, MemoryModel.Estimate(s with { LogitRows = 32 }).Categories),
            ("NF4 embedding/classifier", true, MemoryModel.Estimate(s with { Embeddings = EmbeddingFormat.Nf4 }).Categories),
            ("Q8 embedding/classifier", false, MemoryModel.Estimate(s with { Embeddings = EmbeddingFormat.Q8 }).Categories),
            ("layer inputs on the host (--offload-checkpoints)", true, MemoryModel.Estimate(s with { Checkpointing = true, OffloadCheckpoints = true }).Categories),
            ("AdamW state on the host (--optimizer-on-host)", true, MemoryModel.Estimate(s with { OptimizerOnHost = true }).Categories),
            ("fp16 LoRA (no quantization)", false, MemoryModel.Fp16Lora(s)),
            ("full fine-tuning (fp16 + fp32 grads + AdamW)", false, MemoryModel.FullFineTuning(s)),
        };
        if (!s.FreezeA && s.Method.CanFreezeA)
            list.Insert(1, ("LoRA-FA: A frozen (--freeze-a)", true, MemoryModel.Estimate(s with { FreezeA = true }).Categories));
        return list;
    }
}
