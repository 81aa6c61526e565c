// Trainable tensors on the device with their gradients and AdamW moments, charged to the trainable, gradient and
// optimizer memory categories; the optimizer step, global-norm clipping and host round trips for checkpoints. AdamW's
// moments can live in host memory (the paged-optimizer idea): the update kernel streams them over the bus.
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

public sealed class TrainableTensor : IDisposable
{
    public TrainableTensor(VulkanContext ctx, string name, long[] shape, bool withOptimizer, MemoryPlace optimizerPlace = MemoryPlace.Device)
    {
        Name = name;
        Shape = shape;
        Param = DeviceTensor.Create(ctx, name, DType.F32, shape, MemoryCategory.Trainable);
        if (withOptimizer)
        {
            Grad = DeviceTensor.Create(ctx, name + ".grad", DType.F32, shape, MemoryCategory.Gradients);
            M = DeviceTensor.Create(ctx, name + ".adam_m", DType.F32, shape, MemoryCategory.Optimizer, optimizerPlace);
            V = DeviceTensor.Create(ctx, name + ".adam_v", DType.F32, shape, MemoryCategory.Optimizer, optimizerPlace);
            BasicOps.Fill(Grad, 0);
            BasicOps.Fill(M, 0);
            BasicOps.Fill(V, 0);
        }
    }

    public string Name { get; }
    public long[] Shape { get; }
    /// <summary>Kept at its initialization: no gradient, no optimizer state.</summary>
    public bool Frozen { get; init; }
    public DeviceTensor Param { get; }
    public DeviceTensor? Grad { get; }
    public DeviceTensor? M { get; }
    public DeviceTensor? V { get; }

    public void Dispose()
    {
        Param.Dispose();
        Grad?.Dispose();
        M?.Dispose();
        V?.Dispose();
    }
}

/// <summary>All trainable tensors of an adapter, by canonical name (see <see cref="AdapterWeights"/>).</summary>
public sealed class TrainableParameters : IDisposable
{
    private readonly VulkanContext _ctx;
    private DeviceTensor? _partials;
    private DeviceTensor? _norm;

    public TrainableParameters(VulkanContext ctx, bool withOptimizer, MemoryPlace optimizerPlace = MemoryPlace.Device)
    {
        _ctx = ctx;
        WithOptimizer = withOptimizer;
        OptimizerPlace = optimizerPlace;
    }

    public bool WithOptimizer { get; }
    /// <summary>Where AdamW's m and v live: device memory, or host memory streamed by the update kernel.</summary>
    public MemoryPlace OptimizerPlace { get; }
    public Dictionary<string, TrainableTensor> ByName { get; } = new(StringComparer.Ordinal);
    public long Count => ByName.Values.Sum(t => t.Param.Count);

    /// <summary>Trained values: the tensors that have gradients (all but frozen ones, when training).</summary>
    public long TrainedCount => ByName.Values.Where(t => !t.Frozen).Sum(t => t.Param.Count);

    /// <summary>Tensors with a gradient and optimizer state (none without an optimizer).</summary>
    private IEnumerable<TrainableTensor> Trained => ByName.Values.Where(t => t.Grad != null);

    /// <summary>Adds a tensor; a <paramref name="frozen"/> one gets no gradient or optimizer state even when training.</summary>
    public TrainableTensor Add(string name, long[] shape, float[] init, bool frozen = false)
    {
        var t = new TrainableTensor(_ctx, name, shape, WithOptimizer && !frozen, OptimizerPlace) { Frozen = frozen };
        t.Param.Upload<float>(init);
        ByName.Add(name, t);
        return t;
    }

    public DeviceTensor this[string name] => ByName[name].Param;

    public void ZeroGrads()
    {
        foreach (var t in Trained) BasicOps.Fill(t.Grad!, 0);
    }

    /// <summary>√Σ grad² over every trainable tensor (one host read).</summary>
    public double GradNorm()
    {
        _partials ??= DeviceTensor.Create(_ctx, "train.grad_norm_partials", DType.F32, [64], MemoryCategory.Workspace);
        _norm ??= DeviceTensor.Create(_ctx, "train.grad_norm", DType.F32, [1], MemoryCategory.Workspace);
        bool first = true;
        foreach (var t in Trained)
        {
            GradOps.SumOfSquares(t.Grad!, _partials, accumulate: !first);
            first = false;
        }
        BasicOps.SumAll(_partials, _norm);
        return Math.Sqrt(_norm.ToArray<float>()[0]);
    }

    /// <summary>One AdamW step on every tensor with gradients scaled by <paramref name="gradScale"/>.</summary>
    public void Step(long step, AdamWSettings settings, float gradScale)
    {
        foreach (var t in Trained) AdamW.Step(t.Param, t.Grad!, t.M!, t.V!, step, settings, gradScale);
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
        Trained.ToDictionary(t => t.Name, t => (t.M!.ToArray<float>(), t.V!.ToArray<float>()));

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
        foreach (var t in ByName.Values) t.Dispose();
        _partials?.Dispose();
        _norm?.Dispose();
    }
}
