// Fit planner: with the analytic memory model, the longest sequence (batch 1) and the largest batch (at a sequence
// length) that fit a memory budget, which switches that takes, and what levers the runtime lacks would add.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

/// <summary>One way to run: the switches on top of the base setup and whether the runtime can do it.</summary>
public sealed record PlanOption(string Name, bool Checkpointing, int LogitRows, EmbeddingFormat Embeddings, bool OffloadCheckpoints, bool OptimizerOnHost,
    bool Available)
{
    public TrainSetup Apply(TrainSetup s) => s with
    {
        Checkpointing = Checkpointing, LogitRows = LogitRows, Embeddings = Embeddings, OffloadCheckpoints = OffloadCheckpoints, OptimizerOnHost = OptimizerOnHost,
    };

    public IReadOnlyList<string> Switches(TrainSetup s)
    {
        var list = new List<string>();
        if (Checkpointing) list.Add("checkpointing");
        list.Add($"chunked loss (--loss-chunk {LogitRows})");
        if (Embeddings == EmbeddingFormat.Nf4) list.Add("nf4-dq embedding/classifier (--quant-embeddings nf4-dq)");
        if (Embeddings == EmbeddingFormat.Q8) list.Add("q8 embedding/classifier (not available)");
        if (OffloadCheckpoints) list.Add("layer inputs in host memory (--offload-checkpoints)");
        if (OptimizerOnHost) list.Add("AdamW state in host memory (--optimizer-on-host)");
        list.Add($"{s.Quant.Type} base");
        return list;
    }
}

public sealed record FitResult(PlanOption Option, int Value, MemoryEstimate Estimate);

public sealed record Plan(
    TrainSetup Base,
    long Budget,
    long Margin,
    FitResult? MaxSeq,
    FitResult? MaxBatch,
    FitResult? MaxSeqWithUnavailable,
    string Message)
{
    /// <summary>The cheapest way (fewest levers) to run batch 1 at the setup's sequence length, or null when none fits.</summary>
    public FitResult? Cheapest { get; init; }

    public long Usable => Budget - Margin;
}

public static class FitPlanner
{
    /// <summary>The switch combinations, cheapest (fastest) first; the unavailable ones last.</summary>
    public static IReadOnlyList<PlanOption> Options { get; } =
    [
        new("as is", false, 128, EmbeddingFormat.Fp32, false, false, true),
        new("checkpointing", true, 128, EmbeddingFormat.Fp32, false, false, true),
        new("checkpointing, 32-row loss chunks", true, 32, EmbeddingFormat.Fp32, false, false, true),
        new("checkpointing, 32-row loss chunks, NF4 embedding/classifier", true, 32, EmbeddingFormat.Nf4, false, false, true),
        new("checkpointing, 32-row loss chunks, NF4 embedding/classifier, layer inputs on host", true, 32, EmbeddingFormat.Nf4, true, false, true),
        new("checkpointing, 32-row loss chunks, NF4 embedding/classifier, layer inputs and AdamW state on host", true, 32, EmbeddingFormat.Nf4, true, true, true),
    ];

    /// <summary>Headroom kept for arena block rounding: 3% of the budget, at most 256 MiB.</summary>
    public static long MarginFor(long budget) => Math.Min(256L << 20, budget * 3 / 100);

    private static bool Fits(TrainSetup s, long usable) => MemoryModel.Estimate(s).PeakBytes <= usable;

    /// <summary>Largest v in [lo, hi] with fits(v) (monotone), or 0 when even lo does not fit.</summary>
    private static int Largest(int lo, int hi, Func<int, bool> fits)
    {
        if (hi < lo || !fits(lo)) return 0;
        while (lo < hi)
        {
            int mid = lo + (hi - lo + 1) / 2;
            if (fits(mid)) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>Plans <paramref name="s"/> (its batch and sequence length are the ones the batch search keeps) for <paramref name="budget"/>.</summary>
    public static Plan Make(TrainSetup s, long budget)
    {
        long margin = MarginFor(budget), usable = budget - margin;
        int ctxLen = s.Config.MaxSeqLen > 0 ? s.Config.MaxSeqLen : 1 << 20;
        FitResult? Seq(PlanOption o)
        {
            int v = Largest(2, ctxLen, n => Fits(o.Apply(s) with { Batch = 1, SeqLen = n }, usable));
            return v == 0 ? null : new FitResult(o, v, MemoryModel.Estimate(o.Apply(s) with { Batch = 1, SeqLen = v }));
        }
        FitResult? Batch(PlanOption o)
        {
            int v = Largest(1, 1 << 16, b => Fits(o.Apply(s) with { Batch = b }, usable));
            return v == 0 ? null : new FitResult(o, v, MemoryModel.Estimate(o.Apply(s) with { Batch = v }));
        }
        FitResult? Best(Func<PlanOption, FitResult?> f, bool available)
        {
            FitResult? best = null;
            foreach (var o in Options.Where(o => !available || o.Available))
            {
                var r = f(o);
                if (r != null && (best == null || r.Value > best.Value)) best = r;
            }
            return best;
        }
        var maxSeq = Best(Seq, true);
        var maxBatch = Best(Batch, true);
        var extra = Best(Seq, false);
        if (extra != null && maxSeq != null && extra.Value <= maxSeq.Value) extra = null;
        string msg = Describe(s, budget, maxSeq, maxBatch, extra);
        FitResult? cheapest = null;
        foreach (var o in Options.Where(o => o.Available))
        {
            var e = MemoryModel.Estimate(o.Apply(s) with { Batch = 1 });
            if (e.PeakBytes <= usable) { cheapest = new FitResult(o, s.SeqLen, e); break; }
        }
        return new Plan(s, budget, margin, maxSeq, maxBatch, extra, msg) { Cheapest = cheapest };
    }

    private static string Describe(TrainSetup s, long budget, FitResult? seq, FitResult? batch, FitResult? extra)
    {
        var c = s.Config;
        var inv = CultureInfo.InvariantCulture;
        string name = $"{c.NLayers} layers × {c.Dim} ({s.Quant.Type}, {s.Method.ToString().ToLowerInvariant()} r={s.Rank})";
        if (seq == null)
        {
            var w = MemoryModel.Estimate(s with { Batch = 1, SeqLen = 2, Checkpointing = true });
            return string.Create(inv, $"{name} does not fit {ByteSize.Format(budget)}: the weights alone take {ByteSize.Format(w[MemoryCategory.Weights])} and a 2-token step {ByteSize.Format(w.PeakBytes)}");
        }
        string text = string.Create(inv,
            $"{name} in {ByteSize.Format(budget)}: up to {seq.Value} tokens at batch 1 ({string.Join(", ", seq.Option.Switches(s))}; {ByteSize.Format(seq.Estimate.PeakBytes)})");
        text += batch == null
            ? string.Create(inv, $"; no batch fits at --seq-len {s.SeqLen}")
            : string.Create(inv, $"; up to batch {batch.Value} at --seq-len {s.SeqLen} ({string.Join(", ", batch.Option.Switches(s))}; {ByteSize.Format(batch.Estimate.PeakBytes)})");
        if (extra != null) text += string.Create(inv, $"; {extra.Value} tokens with {extra.Option.Name.TrimStart('+', ' ')} (not available yet)");
        return text;
    }

    /// <summary>
    /// The plan as a JSON object: max_seq_len, max_batch, switches, then details; each fit also gets "train_flags" when
    /// <paramref name="trainFlags"/> says how a front end selects its way to run.
    /// </summary>
    public static JsonObject ToJson(Plan p, string model, Func<PlanOption, string>? trainFlags = null)
    {
        var s = p.Base;
        JsonObject Fit(FitResult r) => new()
        {
            ["value"] = r.Value, ["option"] = r.Option.Name, ["switches"] = new JsonArray(r.Option.Switches(s).Select(x => (JsonNode)x).ToArray()),
            ["train_flags"] = trainFlags?.Invoke(r.Option),
            ["peak_bytes"] = r.Estimate.PeakBytes,
            ["host_bytes"] = r.Estimate.HostBytes,
            ["categories"] = new JsonObject(r.Estimate.Categories.Select(kv => KeyValuePair.Create(kv.Key.ToString().ToLowerInvariant(), (JsonNode?)kv.Value))),
        };
        return new JsonObject
        {
            ["model"] = model,
            ["budget_bytes"] = p.Budget,
            ["margin_bytes"] = p.Margin,
            ["max_seq_len"] = p.MaxSeq?.Value ?? 0,
            ["max_batch"] = p.MaxBatch?.Value ?? 0,
            ["seq_len"] = s.SeqLen,
            ["switches"] = new JsonArray((p.MaxSeq?.Option.Switches(s) ?? []).Select(x => (JsonNode)x).ToArray()),
            ["max_seq"] = p.MaxSeq is { } a ? Fit(a) : null,
            ["max_batch_detail"] = p.MaxBatch is { } b ? Fit(b) : null,
            ["cheapest_at_seq_len"] = p.Cheapest is { } ch ? Fit(ch) : null,
            ["max_seq_len_with_unavailable_levers"] = p.MaxSeqWithUnavailable is { } e ? Fit(e) : null,
            ["message"] = p.Message,
        };
    }
}
