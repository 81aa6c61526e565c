// Analytic memory model of one training step: bytes per category exactly as DeviceLlama, TrainableParameters,
// the method's runtime (its own memory terms) and TrainStep allocate them, in device memory or (offloaded state) host memory; levers the runtime lacks are marked.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

/// <summary>How the embedding and classifier would be held: fp32 is what the runtime does; NF4 and Q8 are modelled only.</summary>
public enum EmbeddingFormat { Fp32, Nf4, Q8 }

/// <summary>Everything the memory of a training step depends on.</summary>
public sealed record TrainSetup
{
    public required LlamaConfig Config { get; init; }
    public PeftMethod Method { get; init; } = PeftMethod.Lora;
    public BaseQuant Quant { get; init; } = BaseQuant.Parse("nf4-dq");
    public int Rank { get; init; } = 8;
    /// <summary>LoRA-FA (--freeze-a): A is stored but has no gradient or AdamW moments.</summary>
    public bool FreezeA { get; init; }
    public TargetModule[] Targets { get; init; } = Enum.GetValues<TargetModule>();
    /// <summary>The method's own configuration record (null: the method's defaults).</summary>
    public MethodSettings? Settings { get; init; }
    /// <summary>QA-LoRA group size (the INT4 base's); bottleneck size for --method adapter.</summary>
    public int GroupSize { get; init; } = 32;
    public int Bottleneck { get; init; } = 16;
    /// <summary>LoRA dropout: with it (or QA-LoRA pooling) the LoRA branch needs input-sized scratch buffers.</summary>
    public float Dropout { get; init; }
    public int Batch { get; init; } = 1;
    public int SeqLen { get; init; } = 512;
    public bool Checkpointing { get; init; } = true;
    /// <summary>Rows of logits per cross-entropy chunk (TrainStep's logitRows; the trainer uses 128).</summary>
    public int LogitRows { get; init; } = 128;
    /// <summary>Device memory is host-mapped (no staging buffers): lavapipe and integrated GPUs.</summary>
    public bool UnifiedMemory { get; init; } = true;
    /// <summary>
    /// The device runs the shared-tiles matmuls (GPUs; CPU devices run the lanes kernels): skinny products split K into
    /// partials in one fixed scratch, which the training step reserves up front.
    /// </summary>
    public bool SharedTileMatmuls { get; init; }
    public EmbeddingFormat Embeddings { get; init; } = EmbeddingFormat.Fp32;
    /// <summary>AdamW m and v in host memory, streamed by the update kernel (--optimizer-on-host).</summary>
    public bool OptimizerOnHost { get; init; }
    /// <summary>Layer inputs saved for recomputation in host memory (--offload-checkpoints; needs checkpointing).</summary>
    public bool OffloadCheckpoints { get; init; }

    /// <summary>
    /// A setup for <paramref name="method"/> at <paramref name="rank"/> on <paramref name="targets"/>, on <paramref name="quant"/>
    /// or the method's default base (INT4 bases set the group size), batch 1, checkpointing on.
    /// </summary>
    public static TrainSetup For(LlamaConfig config, PeftMethod method, BaseQuant? quant, int rank, TargetModule[] targets, int seqLen)
    {
        var q = quant ?? method.DefaultQuant(null);
        return new TrainSetup
        {
            Config = config, Method = method, Quant = q, Rank = rank, Targets = targets, GroupSize = q.IsInt4 ? q.Blocksize : 32,
            Batch = 1, SeqLen = seqLen, Checkpointing = true,
        };
    }

    /// <summary>
    /// This setup with LoRA-FA's frozen A when <paramref name="freezeA"/>; a SettingException when the method has no A
    /// to freeze.
    /// </summary>
    public TrainSetup WithFreezeA(bool freezeA)
    {
        if (!freezeA) return this;
        return Method.CanFreezeA ? this with { FreezeA = true }
            : throw new SettingException($"{PlanSettings.FreezeA}: {Method} has no A to freeze (methods with one: {string.Join(", ", PeftMethods.All.Where(m => m.CanFreezeA).Select(m => m.CliName))})");
    }

    /// <summary>
    /// A change to the adapter configuration on top of the method's (a variant such as `lora+rslora` from
    /// <see cref="MethodSpec"/>); measured runs train it, the memory model sees it through <see cref="ToAdapterConfig"/>.
    /// </summary>
    public Func<AdapterConfig, AdapterConfig>? Variant { get; init; }

    /// <summary>The adapter a measured run of this setup trains (alpha = 2r; QA-LoRA groups, else the base's blocks), with <see cref="Variant"/> applied.</summary>
    public AdapterConfig ToAdapterConfig() => Variant is { } v ? v(Method.ConfigFor(this)) : Method.ConfigFor(this);

    /// <summary>This setup as <paramref name="ctx"/>'s device runs it: host-mapped memory or staging, lanes or shared-tiles matmuls.</summary>
    public TrainSetup OnDevice(Runtime.Vulkan.VulkanContext ctx) => this with
    {
        UnifiedMemory = ctx.Arena.HostMapped,
        SharedTileMatmuls = Runtime.Kernels.MatMul.Choose(ctx) == Runtime.Kernels.MatMulAlgorithm.SharedTiles,
    };

    /// <summary>Which parts of this setup the runtime cannot do yet (empty when it can run as is).</summary>
    public IReadOnlyList<string> Unavailable()
    {
        var list = new List<string>();
        if (Method.NotPlanned is { } gap) list.Add(gap);
        if (Embeddings == EmbeddingFormat.Q8) list.Add("Q8 embedding/classifier");
        if (OffloadCheckpoints && !Checkpointing) list.Add("offloaded checkpoints without checkpointing");
        return list;
    }
}

/// <summary>One named allocation (or group of equal ones) of the model, in device or host memory.</summary>
public sealed record MemoryItem(string Name, MemoryCategory Category, long Bytes, bool PerLayer, MemoryPlace Place = MemoryPlace.Device);

/// <summary>The estimate: items, device bytes per category, the step total, host bytes, and the transient peak of loading the base.</summary>
public sealed record MemoryEstimate(TrainSetup Setup, IReadOnlyList<MemoryItem> Items, long LoadPeakBytes)
{
    private IEnumerable<MemoryItem> OnDevice => Items.Where(i => i.Place == MemoryPlace.Device);

    /// <summary>Device bytes per category.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> Categories =>
        Enum.GetValues<MemoryCategory>().ToDictionary(c => c, c => OnDevice.Where(i => i.Category == c).Sum(i => i.Bytes));

    /// <summary>Host bytes per category (offloaded state).</summary>
    public IReadOnlyDictionary<MemoryCategory, long> HostCategories =>
        Enum.GetValues<MemoryCategory>().ToDictionary(c => c, c => Items.Where(i => i.Place == MemoryPlace.Host && i.Category == c).Sum(i => i.Bytes));

    /// <summary>Device bytes of one category.</summary>
    public long this[MemoryCategory c] => OnDevice.Where(i => i.Category == c).Sum(i => i.Bytes);

    /// <summary>Device bytes live at the peak of a training step (everything is allocated up front and stays).</summary>
    public long TotalBytes => OnDevice.Sum(i => i.Bytes);

    /// <summary>Host bytes of offloaded state.</summary>
    public long HostBytes => Items.Where(i => i.Place == MemoryPlace.Host).Sum(i => i.Bytes);

    /// <summary>The larger of the step and the load-time peak.</summary>
    public long PeakBytes => Math.Max(TotalBytes, LoadPeakBytes);
}

public static class MemoryModel
{
    /// <summary>Bytes of a buffer of <paramref name="b"/> bytes as allocated: at least 4, padded to 4.</summary>
    public static long Pad4(long b) => (Math.Max(b, 4) + 3) / 4 * 4;
    /// <summary>Bytes of an fp32 buffer of <paramref name="n"/> values.</summary>
    public static long F32(long n) => Pad4(n * 4);

    /// <summary>
    /// DeviceQuantizedWeight.DeviceBytes of an [outF, inF] weight: NF4/FP4 codes (n+1)/2, fp32 absmax per block or,
    /// with double quantization, u8 absmax codes + fp32 nested absmax per 256 blocks + the 4-byte offset; INT4 codes +
    /// fp32 scale and min per group; fp32 n·4. Buffers padded to 4 bytes.
    /// </summary>
    public static long LinearDeviceBytes(BaseQuant q, long outF, long inF) => LinearArenaBytes(q, outF, inF) + (q.DoubleQuant ? 4 : 0);

    /// <summary>What the arena is charged for the weight (DeviceBytes without the push-constant offset).</summary>
    public static long LinearArenaBytes(BaseQuant q, long outF, long inF)
    {
        long n = outF * inF;
        if (!q.IsQuantized) return F32(n);
        long codes = Pad4((n + 1) / 2);
        if (q.IsInt4)
        {
            long groups = outF * ((inF + q.Blocksize - 1) / q.Blocksize);
            return codes + 2 * F32(groups);
        }
        long nblk = (n + q.Blocksize - 1) / q.Blocksize;
        return q.DoubleQuant ? codes + Pad4(nblk) + F32((nblk + 255) / 256) : codes + F32(nblk);
    }

    /// <summary>The linear weights of one layer: (name, out, in).</summary>
    public static (string Name, int Out, int In)[] LayerLinears(LlamaConfig c) =>
        [.. Enum.GetValues<TargetModule>().Select(t => (AdapterWeights.TargetName(t), c.LinearShape(t).Out, c.LinearShape(t).In))];

    /// <summary>Every parameter of the base model (embedding, classifier, norms, linears).</summary>
    public static long ParameterCount(LlamaConfig c)
    {
        long emb = (long)c.VocabSize * c.Dim * (c.TiedClassifier ? 1 : 2);
        long layer = LayerLinears(c).Sum(l => (long)l.Out * l.In) + 2L * c.Dim + (c.AttentionBias ? c.QDim + 2L * c.KvDim : 0)
            + (c.OutputBias ? c.Dim : 0) + (c.MlpBias ? 2L * c.HiddenDim + c.Dim : 0);
        return emb + c.Dim + c.NLayers * layer;
    }

    /// <summary>Trained values of the adapter: the sum over its method's parameter spec, frozen tensors left out.</summary>
    public static long TrainableCount(TrainSetup s) => s.Method.Parameters(s.Config, s.ToAdapterConfig()).Where(p => !p.Frozen).Sum(p => p.Count);

    /// <summary>The estimate for <paramref name="s"/>, item by item.</summary>
    public static MemoryEstimate Estimate(TrainSetup s)
    {
        var c = s.Config;
        int L = c.NLayers;
        int seqRows = s.SeqLen + s.Method.ExtraRowsPerSequence(s);   // virtual tokens add rows to every sequence
        long rows = (long)s.Batch * seqRows;
        var items = new List<MemoryItem>();
        void Add(string name, MemoryCategory cat, long bytes, bool perLayer = false, MemoryPlace place = MemoryPlace.Device)
        {
            if (bytes > 0) items.Add(new MemoryItem(name, cat, bytes, perLayer, place));
        }

        // Weights (DeviceLlama.Load): embedding, classifier, final norm, RoPE frequencies, per layer norms and linears.
        long embBytes = EmbeddingBytes(s.Embeddings, c.VocabSize, c.Dim);
        Add("embedding", MemoryCategory.Weights, embBytes);
        if (!c.TiedClassifier) Add("classifier", MemoryCategory.Weights, embBytes);
        Add("final_norm + rope_inv_freq", MemoryCategory.Weights, F32(c.Dim) + F32(c.HeadDim / 2));
        long linears = LayerLinears(c).Sum(l => LinearArenaBytes(s.Quant, l.Out, l.In));
        Add("linear weights", MemoryCategory.Weights, L * linears, true);
        Add("layer norms", MemoryCategory.Weights, L * 2 * F32(c.Dim), true);
        if (c.AttentionBias) Add("q/k/v biases", MemoryCategory.Weights, L * (F32(c.QDim) + 2 * F32(c.KvDim)), true);
        if (c.OutputBias) Add("o biases", MemoryCategory.Weights, L * F32(c.Dim), true);
        if (c.MlpBias) Add("MLP biases", MemoryCategory.Weights, L * (2 * F32(c.HiddenDim) + F32(c.Dim)), true);
        if (s.Quant.DoubleQuant) Add("double-quant dynamic map", MemoryCategory.Weights, 256 * 4);

        // Trainable tensors, gradients and AdamW moments (TrainableParameters: fp32, packed back to back in flat buffers;
        // frozen ones, LoRA-FA's A, without gradient or moments).
        var spec = s.Method.Parameters(c, s.ToAdapterConfig());
        long trainableBytes = spec.Sum(p => F32(p.Count)), largestTrainable = spec.Count == 0 ? 0 : spec.Max(p => F32(p.Count));
        long trainedBytes = spec.Where(p => !p.Frozen).Sum(p => F32(p.Count));
        Add("adapter parameters", MemoryCategory.Trainable, trainableBytes, true);
        Add("adapter gradients", MemoryCategory.Gradients, trainedBytes, true);
        Add("AdamW m and v", MemoryCategory.Optimizer, 2 * trainedBytes, true, s.OptimizerOnHost ? MemoryPlace.Host : MemoryPlace.Device);

        // Activations (TrainStep): layer inputs, LayerState(s), gradient buffers, ids/targets/loss, one logits chunk.
        // ∂swiglu, ∂gate and ∂up overwrite swiglu, gate and up; held-out evaluation reuses these buffers.
        long state = LayerStateBytes(c, s.Batch, seqRows);
        if (s.Checkpointing) Add("layer state (1, recomputed)", MemoryCategory.Activations, state);
        else Add("layer states (1 per layer)", MemoryCategory.Activations, L * state, true);
        if (s.OffloadCheckpoints && s.Checkpointing)
        {
            Add("layer inputs (L, host)", MemoryCategory.Activations, L * F32(rows * c.Dim), true, MemoryPlace.Host);
            Add("x_a, x_b (layer input/output)", MemoryCategory.Activations, 2 * F32(rows * c.Dim));
        }
        else
        {
            Add("layer inputs (L+1)", MemoryCategory.Activations, (L + 1) * F32(rows * c.Dim), true);
            if (s.Checkpointing) Add("x_recompute", MemoryCategory.Activations, F32(rows * c.Dim));
        }
        Add("h_final, dx, dh", MemoryCategory.Activations, 3 * F32(rows * c.Dim));
        Add("do, dq, dk, dv, attn_delta", MemoryCategory.Activations, 2 * F32(rows * c.QDim) + 2 * F32(rows * c.KvDim) + F32(rows * c.NHeads));
        foreach (var term in s.Method.ActivationTerms(s, rows)) Add(term.Name, term.Category, term.Bytes);
        Add("ids, targets, loss rows, loss sum", MemoryCategory.Activations, 2 * Pad4(rows * 4) + F32(rows) + F32(1));
        int logitRows = (int)Math.Min(s.LogitRows, rows);
        Add($"logits chunk ({logitRows} rows × vocab)", MemoryCategory.Activations, F32((long)logitRows * c.VocabSize));

        // Workspace: the method's scratch (LoRA: t, dt, dropout and pooling buffers) and the gradient-norm partials.
        foreach (var term in s.Method.WorkspaceTerms(s, rows)) Add(term.Name, term.Category, term.Bytes);
        Add("gradient-norm partials", MemoryCategory.Workspace, F32(64) + F32(1));
        Add("gradient-norm tensor table", MemoryCategory.Workspace, Pad4(8L * spec.Count(p => !p.Frozen)));   // (offset, count) u32 pairs
        if (s.SharedTileMatmuls) Add("split-K partials", MemoryCategory.Workspace, Runtime.Kernels.SplitK.ScratchBytes);

        // Staging: discrete GPUs copy small transfers through one staging ring and larger ones through a host-visible
        // buffer of up to 32 MiB of their own, one at a time.
        if (!s.UnifiedMemory)
        {
            Add("staging ring", MemoryCategory.Staging, (long)Runtime.Tensors.Transfers.RingBytes);
            long largest = Pad4(Math.Max(largestTrainable, rows * 4));
            if (largest > (long)Runtime.Tensors.Transfers.RingTransferBytes)
                Add("staging buffer", MemoryCategory.Staging, Math.Min((long)Runtime.Tensors.Transfers.StagingBytes, largest));
        }

        // Loading quantizes layer by layer through an fp32 copy of one weight plus its block absmax (workspace).
        long biggest = LayerLinears(c).Max(l => (long)l.Out * l.In);
        long transient = s.Quant.IsQuantized && !s.Quant.IsInt4 ? F32(biggest) + 2 * F32((biggest + s.Quant.Blocksize - 1) / s.Quant.Blocksize) : 0;
        long weights = items.Where(i => i.Category == MemoryCategory.Weights && i.Place == MemoryPlace.Device).Sum(i => i.Bytes);
        // A quantized embedding (then classifier) is quantized first, through an fp32 copy of the whole table.
        long tablePeak = s.Embeddings == EmbeddingFormat.Nf4
            ? (c.TiedClassifier ? 1 : 2) * embBytes + F32((long)c.VocabSize * c.Dim) + 2 * F32(((long)c.VocabSize * c.Dim + 63) / 64)
            : 0;
        return new MemoryEstimate(s, items, Math.Max(weights + transient, tablePeak));
    }

    /// <summary>Bytes of a [vocab, dim] table as fp32 (the runtime), NF4 (+DQ) or Q8_0 (modelled).</summary>
    public static long EmbeddingBytes(EmbeddingFormat f, long vocab, long dim) => f switch
    {
        EmbeddingFormat.Nf4 => LinearArenaBytes(BaseQuant.Parse("nf4-dq"), vocab, dim),
        EmbeddingFormat.Q8 => vocab * dim + Pad4((vocab * dim + 31) / 32 * 2),
        _ => F32(vocab * dim),
    };

    /// <summary>LayerState: h1, x_mid, h2, z [rows, dim]; q, o [rows, q_dim]; k, v [rows, kv_dim]; gate, up, swiglu [rows, hidden]; lse.</summary>
    public static long LayerStateBytes(LlamaConfig c, int batch, int seqLen)
    {
        long rows = (long)batch * seqLen;
        return 4 * F32(rows * c.Dim) + 2 * F32(rows * c.QDim) + 2 * F32(rows * c.KvDim) + 3 * F32(rows * c.HiddenDim) + F32((long)batch * c.NHeads * seqLen);
    }

    /// <summary>
    /// Analytic comparison rows, not runnable here: full fine-tuning (fp16 weights, fp32 gradients, fp32 AdamW m and v,
    /// the same activations) and LoRA on an fp16 base (the runtime's --quant none holds fp32).
    /// </summary>
    public static IReadOnlyDictionary<MemoryCategory, long> FullFineTuning(TrainSetup s)
    {
        var lora = Estimate(s with { Quant = BaseQuant.None });
        long p = ParameterCount(s.Config);
        return new Dictionary<MemoryCategory, long>
        {
            [MemoryCategory.Weights] = 2 * p,
            [MemoryCategory.Trainable] = 0,
            [MemoryCategory.Gradients] = 4 * p,
            [MemoryCategory.Optimizer] = 8 * p,
            [MemoryCategory.Activations] = lora[MemoryCategory.Activations],
            [MemoryCategory.Workspace] = 0,
            [MemoryCategory.Staging] = lora[MemoryCategory.Staging],
        };
    }

    /// <summary>LoRA with fp16 base linears (modelled: half of the fp32 base's linear bytes).</summary>
    public static IReadOnlyDictionary<MemoryCategory, long> Fp16Lora(TrainSetup s)
    {
        var e = Estimate(s with { Quant = BaseQuant.None });
        var d = e.Categories.ToDictionary(kv => kv.Key, kv => kv.Value);
        long linears = e.Items.Where(i => i.Name == "linear weights").Sum(i => i.Bytes);
        d[MemoryCategory.Weights] -= linears / 2;
        return d;
    }
}
