// Trainable tensors on the device with their gradients and AdamW moments, charged to the trainable, gradient and
// optimizer memory categories; the optimizer step, global-norm clipping and host round trips for checkpoints. AdamW's
// moments can live in host memory (the paged-optimizer idea): the update kernel streams them over the bus. Tensors are
// packed into flat buffers so that the whole optimizer step takes a constant number of dispatches.
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>One trainable tensor: views of its parameter, gradient and AdamW moments inside a <see cref="ParameterBlock"/>.</summary>
public sealed class TrainableTensor
{
    internal TrainableTensor(string name, long[] shape, long offset, ParameterBlock block, bool frozen)
    {
        Name = name;
        Shape = shape;
        Offset = offset;
        Frozen = frozen;
        long count = shape.Aggregate(1L, (a, b) => a * b);
        Param = View(block.Param, name, offset, count, shape)!;
        Grad = View(block.Grad, name + ".grad", offset, count, shape);
        M = View(block.M, name + ".adam_m", offset, count, shape);
        V = View(block.V, name + ".adam_v", offset, count, shape);
    }

    public string Name { get; }
    public long[] Shape { get; }
    /// <summary>Kept at its initialization: no gradient, no optimizer state (its block has none).</summary>
    public bool Frozen { get; }
    /// <summary>Element offset of this tensor inside its block's flat buffers.</summary>
    public long Offset { get; }
    public DeviceTensor Param { get; }
    public DeviceTensor? Grad { get; }
    public DeviceTensor? M { get; }
    public DeviceTensor? V { get; }

    private static DeviceTensor? View(DeviceTensor? flat, string name, long offset, long count, long[] shape) =>
        flat?.RowsView(offset, count).Reshape(shape).Named(name);
}

/// <summary>
/// Flat fp32 buffers [elements] holding several trainable tensors back to back (parameters, gradients, AdamW m and v),
/// so that zeroing, the gradient norm and the AdamW step each take one dispatch per block instead of one per tensor.
/// </summary>
internal sealed class ParameterBlock : IDisposable
{
    public ParameterBlock(VulkanContext ctx, string name, long elements, bool withOptimizer, MemoryPlace optimizerPlace)
    {
        long n = Math.Max(elements, 1);   // a zero-size allocation is not a buffer; the spare element stays 0 under AdamW
        Param = DeviceTensor.Create(ctx, name, DType.F32, [n], MemoryCategory.Trainable);
        if (withOptimizer)
        {
            Grad = DeviceTensor.Create(ctx, name + ".grad", DType.F32, [n], MemoryCategory.Gradients);
            M = DeviceTensor.Create(ctx, name + ".adam_m", DType.F32, [n], MemoryCategory.Optimizer, optimizerPlace);
            V = DeviceTensor.Create(ctx, name + ".adam_v", DType.F32, [n], MemoryCategory.Optimizer, optimizerPlace);
            BasicOps.Fill(Grad, 0);
            BasicOps.Fill(M, 0);
            BasicOps.Fill(V, 0);
        }
    }

    public DeviceTensor Param { get; }
    public DeviceTensor? Grad { get; }
    public DeviceTensor? M { get; }
    public DeviceTensor? V { get; }
    public List<TrainableTensor> Tensors { get; } = [];
    /// <summary>U32 [tensors, 2]: (offset, count) of each tensor's gradient, for the one-dispatch norm; built on first use.</summary>
    public DeviceTensor? GradTable { get; set; }
    /// <summary>Every flat buffer is one bindable range, so several tensors can share a single packed block.</summary>
    public bool Unsplit => Param.Segments.Count == 1 && (Grad is null || (Grad.Segments.Count == 1 && M!.Segments.Count == 1 && V!.Segments.Count == 1));

    public void Dispose()
    {
        Param.Dispose();
        Grad?.Dispose();
        M?.Dispose();
        V?.Dispose();
        GradTable?.Dispose();
    }
}

/// <summary>How trainable tensors are laid out: packed into shared flat buffers (the default), or one buffer set each.</summary>
public enum ParameterLayout { Packed, PerTensor }

/// <summary>All trainable tensors of an adapter, by canonical name (see <see cref="AdapterWeights"/>).</summary>
public sealed class TrainableParameters : IDisposable
{
    private readonly VulkanContext _ctx;
    private readonly List<ParameterBlock> _blocks = [];
    private DeviceTensor? _partials;
    private DeviceTensor? _partialsUsed;
    private DeviceTensor? _norm;

    /// <summary>The most partial sums (workgroups) the gradient norm spreads a tensor over.</summary>
    public const int MaxNormGroups = 64;

    /// <summary>Elements per workgroup the gradient norm aims for (64 invocations × 64 elements each).</summary>
    public const int NormGroupElements = 4096;

    public TrainableParameters(VulkanContext ctx, bool withOptimizer, MemoryPlace optimizerPlace = MemoryPlace.Device, ParameterLayout layout = ParameterLayout.Packed)
    {
        _ctx = ctx;
        WithOptimizer = withOptimizer;
        OptimizerPlace = optimizerPlace;
        Layout = layout;
    }

    public bool WithOptimizer { get; }
    /// <summary>Where AdamW's m and v live: device memory, or host memory streamed by the update kernel.</summary>
    public MemoryPlace OptimizerPlace { get; }
    public ParameterLayout Layout { get; }
    public Dictionary<string, TrainableTensor> ByName { get; } = new(StringComparer.Ordinal);
    public long Count => ByName.Values.Sum(t => t.Param.Count);

    /// <summary>Trained values: the tensors that have gradients (all but frozen ones, when training).</summary>
    public long TrainedCount => ByName.Values.Where(t => !t.Frozen).Sum(t => t.Param.Count);

    /// <summary>Blocks with gradients and optimizer state (none without an optimizer; frozen tensors' blocks have none).</summary>
    private IEnumerable<ParameterBlock> TrainedBlocks => _blocks.Where(b => b.Grad != null);

    /// <summary>Adds a tensor; a <paramref name="frozen"/> one gets no gradient or optimizer state even when training.</summary>
    public TrainableTensor Add(string name, long[] shape, float[] init, bool frozen = false) => AddAll([(name, shape, init)], frozen)[0];

    /// <summary>
    /// Adds tensors with their initial values. With the packed layout they share one block of flat buffers (several
    /// blocks only where one would not fit a single allocation); otherwise each gets its own.
    /// </summary>
    public IReadOnlyList<TrainableTensor> AddAll(IReadOnlyList<(string Name, long[] Shape, float[] Init)> tensors, bool frozen = false)
    {
        foreach (var (name, _, _) in tensors)
            if (ByName.ContainsKey(name)) throw new ArgumentException($"trainable tensor '{name}' added twice");
        var added = new List<TrainableTensor>();
        if (Layout == ParameterLayout.Packed && tensors.Count > 1)
        {
            var block = NewBlock(tensors, frozen);
            if (block.Unsplit)
            {
                long offset = 0;
                foreach (var (name, shape, init) in tensors)
                {
                    added.Add(Place(block, name, shape, offset, init, frozen));
                    offset += init.LongLength;
                }
                return added;
            }
            _blocks.Remove(block);
            block.Dispose();
        }
        foreach (var t in tensors) added.Add(Place(NewBlock([t], frozen), t.Name, t.Shape, 0, t.Init, frozen));
        return added;
    }

    private ParameterBlock NewBlock(IReadOnlyList<(string Name, long[] Shape, float[] Init)> tensors, bool frozen)
    {
        string name = tensors.Count == 1 ? tensors[0].Name : $"trainable.block{_blocks.Count}";
        var block = new ParameterBlock(_ctx, name, tensors.Sum(t => t.Init.LongLength), WithOptimizer && !frozen, OptimizerPlace);
        _blocks.Add(block);
        return block;
    }

    private TrainableTensor Place(ParameterBlock block, string name, long[] shape, long offset, float[] init, bool frozen)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != init.LongLength) throw new ArgumentException($"trainable tensor '{name}' [{string.Join(", ", shape)}] got {init.LongLength} initial values");
        var t = new TrainableTensor(name, shape, offset, block, frozen);
        if (count > 0) t.Param.Upload<float>(init);
        block.Tensors.Add(t);
        ByName.Add(name, t);
        return t;
    }

    public DeviceTensor this[string name] => ByName[name].Param;

    /// <summary>Zeroes every gradient: one fill per block.</summary>
    public void ZeroGrads()
    {
        foreach (var b in TrainedBlocks) BasicOps.Fill(b.Grad!, 0);
    }

    /// <summary>
    /// How many partial sums the gradient norm uses: one per <see cref="NormGroupElements"/> elements of the largest trainable
    /// tensor, 1 to <see cref="MaxNormGroups"/>. Small adapters get few workgroups, each reducing once per tensor (the
    /// reductions, not the reads, are the cost on a CPU device); large ones spread over the device. It depends only on the
    /// tensors' sizes, so the packed and per-tensor layouts (and a resumed run) chunk identically.
    /// </summary>
    public int NormGroups()
    {
        long largest = TrainedBlocks.SelectMany(b => b.Tensors).Select(t => t.Param.Count).DefaultIfEmpty(0).Max();
        return (int)Math.Clamp((largest + NormGroupElements - 1) / NormGroupElements, 1, MaxNormGroups);
    }

    /// <summary>√Σ grad² over every trainable tensor (one host read of <see cref="RecordGradNormSquared"/>).</summary>
    public double GradNorm() => Math.Sqrt(RecordGradNormSquared().ToArray<float>()[0]);

    /// <summary>
    /// Records Σ grad² over every trainable tensor into a 1-element device tensor (returned; reused by the next call)
    /// without reading it: one sum-of-squares dispatch per block, tensor by tensor in the same fp32 order as per-tensor
    /// sums, then one total.
    /// </summary>
    public DeviceTensor RecordGradNormSquared()
    {
        _partials ??= DeviceTensor.Create(_ctx, "train.grad_norm_partials", DType.F32, [MaxNormGroups], MemoryCategory.Workspace);
        _partialsUsed ??= _partials.RowsView(0, NormGroups());
        _norm ??= DeviceTensor.Create(_ctx, "train.grad_norm", DType.F32, [1], MemoryCategory.Workspace);
        var partials = _partialsUsed;
        bool first = true;
        foreach (var b in TrainedBlocks)
        {
            if (b.Tensors.Count == 1 || !b.Unsplit)
            {
                foreach (var t in b.Tensors)
                {
                    GradOps.SumOfSquares(t.Grad!, partials, accumulate: !first);
                    first = false;
                }
                continue;
            }
            else
            {
                b.GradTable ??= UploadTable(b);
                GradOps.SumOfSquaresOfSlices(b.Grad!, b.GradTable, partials, accumulate: !first);
            }
            first = false;
        }
        if (first) BasicOps.Fill(partials, 0);
        BasicOps.SumAll(partials, _norm);
        return _norm;
    }

    private DeviceTensor UploadTable(ParameterBlock b)
    {
        var table = new uint[b.Tensors.Count * 2];
        for (int i = 0; i < b.Tensors.Count; i++)
        {
            table[2 * i] = checked((uint)b.Tensors[i].Offset);
            table[2 * i + 1] = checked((uint)b.Tensors[i].Param.Count);
        }
        var t = DeviceTensor.Create(_ctx, b.Param.Name + ".grad_table", DType.U32, [b.Tensors.Count, 2], MemoryCategory.Workspace);
        t.Upload<uint>(table);
        return t;
    }

    /// <summary>One AdamW step on every tensor with gradients scaled by <paramref name="gradScale"/>: one update per block.</summary>
    public void Step(long step, AdamWSettings settings, float gradScale)
    {
        foreach (var b in TrainedBlocks) AdamW.Step(b.Param, b.Grad!, b.M!, b.V!, step, settings, gradScale);
    }

    /// <summary>
    /// One AdamW step on every tensor with gradients, clipped to global norm <paramref name="clip"/> (0 = off) on the
    /// device from the status row at <paramref name="statusOffset"/> of <paramref name="status"/> (Σ grad², then the
    /// step's loss sums); a row with a non-finite value leaves every tensor unchanged (see <see cref="AdamW.StepWithDeviceClip"/>).
    /// </summary>
    public void StepWithDeviceClip(long step, AdamWSettings settings, float clip, DeviceTensor status, long statusOffset, int statusCount)
    {
        foreach (var b in TrainedBlocks) AdamW.StepWithDeviceClip(b.Param, b.Grad!, b.M!, b.V!, step, settings, clip, status, statusOffset, statusCount);
    }

    /// <summary>The parameters on the host, canonical names.</summary>
    public AdapterWeights ToHost(AdapterConfig config)
    {
        var w = new AdapterWeights(config);
        foreach (var (name, t) in ByName) w.Tensors[name] = new HostTensor(t.Param.ToArray<float>(), t.Shape);
        return w;
    }

    /// <summary>Optimizer moments on the host (for checkpoints): name → (m, v).</summary>
    public Dictionary<string, (float[] M, float[] V)> OptimizerState() =>
        ByName.Where(kv => kv.Value.M != null).ToDictionary(kv => kv.Key, kv => (kv.Value.M!.ToArray<float>(), kv.Value.V!.ToArray<float>()));

    public void LoadOptimizerState(Dictionary<string, (float[] M, float[] V)> state)
    {
        foreach (var (name, (m, v)) in state)
        {
            if (!ByName.TryGetValue(name, out var t)) throw new InvalidDataException($"optimizer state names unknown tensor '{name}'");
            t.M!.Upload<float>(m);
            t.V!.Upload<float>(v);
        }
    }

    public void Dispose()
    {
        foreach (var b in _blocks) b.Dispose();
        _partialsUsed?.Dispose();
        _partials?.Dispose();
        _norm?.Dispose();
    }
}
