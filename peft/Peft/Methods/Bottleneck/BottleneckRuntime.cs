// Bottleneck adapters on the device: Houlsby (serial, z ← z + W_up·f(W_down·z + b_down) + b_up after the attention output
// projection and after the MLP) and parallel (beside the MLP, z ← z + s·(W_up·f(W_down·h2 + b_down) + b_up)); forward and backward, for training and inference.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Bottleneck;

/// <summary>
/// Applies and trains bottleneck adapters through the block hooks. Parameters per layer and site (attn, mlp; parallel
/// adapters have mlp only): <c>down</c> [b, dim], <c>down_bias</c> [b], <c>up</c> [dim, b], <c>up_bias</c> [dim].
/// In training the Houlsby input z of every layer and site is saved (it is overwritten in place by the hook); the
/// pre-activation a = W_down·x + b_down is recomputed in the backward from the saved input (parallel: from h2, which the
/// trainer keeps), so nothing of size [rows, b] outlives a hook. With gradient checkpointing the trainer re-runs the
/// layer forward (hooks included) right before its backward, which rewrites the same layer's saved input — correct
/// either way.
/// </summary>
public sealed class BottleneckRuntime : ITrainableAdapter, IDisposable
{
    public const string AttnSite = "attn";
    public const string MlpSite = "mlp";

    private readonly LlamaConfig _c;
    private readonly bool _parallel;
    private readonly int _b;
    private readonly int _maxRows;
    private readonly float _s;                 // output scale: s for parallel, 1 for Houlsby
    private readonly ActivationKind _act;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor _a, _f, _t, _scaledBias, _dbScratch;   // flat scratch, viewed per call
    private readonly DeviceTensor[]? _savedAttn, _savedMlp;              // Houlsby, trainable: per layer [maxRows, dim]

    public BottleneckRuntime(VulkanContext ctx, LlamaConfig config, AdapterConfig adapter, TrainableParameters parameters, int maxRows)
    {
        if (adapter.Method is not BottleneckMethod) throw new ArgumentException("BottleneckRuntime serves bottleneck adapters (--method adapter)");
        var settings = adapter.SettingsOf<BottleneckSettings>();
        if (settings.Bottleneck < 1) throw new FormatException($"{BottleneckMethod.BottleneckOption.Flag} must be ≥ 1, got {settings.Bottleneck}");
        if (maxRows < 1) throw new ArgumentOutOfRangeException(nameof(maxRows), maxRows, "must be ≥ 1");
        _c = config;
        Config = adapter;
        Parameters = parameters;
        _parallel = settings.Kind == BottleneckKind.Parallel;
        if (_parallel && !(float.IsFinite(settings.Scale) && settings.Scale != 0))
            throw new FormatException($"the parallel adapter scale must be a finite non-zero number, got {settings.Scale}");
        _b = settings.Bottleneck;
        _maxRows = maxRows;
        _s = _parallel ? settings.Scale : 1f;
        _act = settings.Activation switch
        {
            BottleneckActivation.Relu => ActivationKind.Relu,
            BottleneckActivation.Silu => ActivationKind.Silu,
            BottleneckActivation.Gelu => ActivationKind.Gelu,
            _ => throw new ArgumentOutOfRangeException(nameof(adapter), settings.Activation, "unknown bottleneck activation"),
        };
        foreach (var spec in adapter.Method.Parameters(config, adapter))
        {
            if (!parameters.ByName.TryGetValue(spec.Name, out var t))
                throw new ArgumentException($"bottleneck adapter: tensor '{spec.Name}' is missing");
            if (!t.Shape.SequenceEqual(spec.Shape))
                throw new ArgumentException($"bottleneck adapter: tensor '{spec.Name}' is [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", spec.Shape)}]");
        }

        using var scope = new TensorScope();
        DeviceTensor Create(string name, MemoryCategory category, params long[] shape) =>
            scope.Add(DeviceTensor.Create(ctx, name, DType.F32, shape, category));
        _a = Create("adapter.a", MemoryCategory.Workspace, (long)maxRows * _b);
        _f = Create("adapter.f", MemoryCategory.Workspace, (long)maxRows * _b);
        _t = Create("adapter.t", MemoryCategory.Workspace, (long)maxRows * _b);
        _scaledBias = Create("adapter.scaled_up_bias", MemoryCategory.Workspace, config.Dim);
        _dbScratch = Create("adapter.d_up_bias", MemoryCategory.Workspace, config.Dim);
        // Only a trainable adapter can run in training mode; inference sessions skip the saved inputs.
        if (parameters.WithOptimizer && !_parallel)
        {
            _savedAttn = [.. Enumerable.Range(0, config.NLayers).Select(l => Create($"adapter.saved.{l}.attn", MemoryCategory.Activations, maxRows, config.Dim))];
            _savedMlp = [.. Enumerable.Range(0, config.NLayers).Select(l => Create($"adapter.saved.{l}.mlp", MemoryCategory.Activations, maxRows, config.Dim))];
        }
        _owned = scope.Keep();
    }

    public AdapterConfig Config { get; }
    public TrainableParameters Parameters { get; }
    /// <summary>Training: the forward saves what the backward needs; inference: the adapter is applied only.</summary>
    public bool Training { get; set; }
    /// <summary>Unused (bottleneck adapters have no dropout); kept for the trainer's interface.</summary>
    public uint StepSeed { get; set; }
    public bool HasBlockHooks => true;

    private static DeviceTensor View(DeviceTensor flat, long rows, long cols) => flat.RowsView(0, rows * cols).Reshape(rows, cols);

    private TrainableTensor P(int layer, string site, string part) => Parameters.ByName[AdapterWeights.Bottleneck(layer, site, part)];

    private long CheckRows(DeviceTensor t)
    {
        if (t.Rows > _maxRows) throw new ArgumentException($"bottleneck adapter: {t.Rows} rows exceed the {_maxRows} it was sized for");
        return t.Rows;
    }

    /// <summary>a = x·W_downᵀ + b_down into the a scratch, [rows, b].</summary>
    private DeviceTensor PreActivation(int layer, string site, DeviceTensor x)
    {
        var a = View(_a, x.Rows, _b);
        MatMul.Run(x, P(layer, site, "down").Param, a, transposeB: true);
        Bias.Add(a, P(layer, site, "down_bias").Param);
        return a;
    }

    /// <summary>z += s·(f(a)·W_upᵀ + b_up) with a computed from the branch input x (x may be z: a is formed first).</summary>
    private void Apply(int layer, string site, DeviceTensor x, DeviceTensor z)
    {
        var a = PreActivation(layer, site, x);
        Activation.Forward(_act, a, a);
        MatMul.Run(a, P(layer, site, "up").Param, z, transposeB: true, alpha: _s, beta: 1);
        var bias = P(layer, site, "up_bias").Param;
        if (_s != 1f)
        {
            BasicOps.Scale(bias, _scaledBias, _s);
            bias = _scaledBias;
        }
        Bias.Add(z, bias);
    }

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y) { }

    public bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false) => false;

    public void AttentionOutput(int layer, DeviceTensor z)
    {
        if (_parallel) return;
        long rows = CheckRows(z);
        if (Training) BasicOps.Copy(z, Saved(_savedAttn, layer, rows));
        Apply(layer, AttnSite, z, z);
    }

    public void MlpOutput(int layer, DeviceTensor h, DeviceTensor z)
    {
        long rows = CheckRows(z);
        if (_parallel)
        {
            Apply(layer, MlpSite, h, z);
            return;
        }
        if (Training) BasicOps.Copy(z, Saved(_savedMlp, layer, rows));
        Apply(layer, MlpSite, z, z);
    }

    private static DeviceTensor Saved(DeviceTensor[]? saved, int layer, long rows) =>
        saved == null
            ? throw new InvalidOperationException("bottleneck adapter: training mode needs trainable parameters (created with an optimizer)")
            : saved[layer].RowsView(0, rows);

    public void AttentionOutputBackward(int layer, DeviceTensor dzIn, DeviceTensor dzOut)
    {
        BasicOps.Copy(dzIn, dzOut);
        if (_parallel) return;
        long rows = CheckRows(dzIn);
        var g = Backward(layer, AttnSite, Saved(_savedAttn, layer, rows), dzIn);
        MatMul.Run(g, P(layer, AttnSite, "down").Param, dzOut, transposeB: false, beta: 1);
    }

    public void MlpOutputBackward(int layer, DeviceTensor h, DeviceTensor dzIn, DeviceTensor dzOut, DeviceTensor dh)
    {
        BasicOps.Copy(dzIn, dzOut);
        long rows = CheckRows(dzIn);
        if (_parallel)
        {
            var hr = LayerState.Rows(h, rows);
            var g = Backward(layer, MlpSite, hr, dzIn);
            MatMul.Run(g, P(layer, MlpSite, "down").Param, LayerState.Rows(dh, rows), transposeB: false, beta: 1);
            return;
        }
        var gh = Backward(layer, MlpSite, Saved(_savedMlp, layer, rows), dzIn);
        MatMul.Run(gh, P(layer, MlpSite, "down").Param, dzOut, transposeB: false, beta: 1);
    }

    /// <summary>
    /// Parameter gradients of one site for branch input x and output gradient dz: with a = x·W_downᵀ + b_down and
    /// g = f′(a) ⊙ (s·dz·W_up): dW_up += s·dzᵀ·f(a), db_up += s·Σ dz, dW_down += gᵀ·x, db_down += Σ g. Returns g
    /// ([rows, b], scratch), whose g·W_down is the gradient of the branch input.
    /// </summary>
    private DeviceTensor Backward(int layer, string site, DeviceTensor x, DeviceTensor dz)
    {
        long rows = x.Rows;
        var down = P(layer, site, "down");
        var downBias = P(layer, site, "down_bias");
        var up = P(layer, site, "up");
        var upBias = P(layer, site, "up_bias");
        var a = PreActivation(layer, site, x);
        var f = View(_f, rows, _b);
        Activation.Forward(_act, a, f);
        MatMulTn.Run(dz, f, up.Grad!, alpha: _s, beta: 1);
        if (_s == 1f) Bias.Grad(dz, upBias.Grad!, accumulate: true);
        else
        {
            Bias.Grad(dz, _dbScratch, accumulate: false);
            GradOps.Axpy(_dbScratch, upBias.Grad!, _s);
        }
        var t = View(_t, rows, _b);
        MatMul.Run(dz, up.Param, t, transposeB: false, alpha: _s);
        Activation.Backward(_act, a, t, t);
        MatMulTn.Run(t, x, down.Grad!, alpha: 1, beta: 1);
        Bias.Grad(t, downBias.Grad!, accumulate: true);
        return t;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
