// DoRA on the device. Forward at each target: y = W0·x (the base), then LoRA's branch y += s·B·A·x, then the columns of y
// scaled by m/n. The row norm n = ‖W0 + s·B·A‖ is exact and cheap: ‖W0_j‖² per row once at attach (decoded from the
// 4-bit base on the device, no full-precision copy kept), then A·W0ᵀ [r, out] (one r-row pass over the packed base),
// A·Aᵀ and B·A·Aᵀ (rank-sized), once per (layer, target) after Training was last set — every training micro-step and
// every evaluation sets it, and the parameters change only between those (a checkpointed layer's recomputed forward and
// generation's token-by-token forwards reuse the norms). Backward with n constant:
// ∂(pre-scale output) = (m/n) ⊙ dy, dm += Σ_rows dy ⊙ (W0·x + s·B·A·x) / n — the pre-scale output is recomputed from x
// in chunks of rows rather than kept per layer — and LoRA's own backward for A, B and the input gradient.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Dora;

public sealed class DoraRuntime : ITrainableAdapter, IDisposable
{
    private readonly LlamaConfig _c;
    private readonly AdapterConfig _a;
    private readonly TrainableParameters _p;
    private readonly LoraRuntime _lora;                 // the additive branch s·B·A·x and its backward
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly Dictionary<(int Layer, TargetModule Target), long> _rowOffset = [];   // into the per-row buffers
    private readonly DeviceTensor _w2, _scale, _invN;   // [Σ out over layers and targets]: ‖W0_j‖², m/n, 1/n
    private readonly DeviceTensor _pre;                 // flat [chunkRows·maxOut]: recomputed pre-scale output of a chunk of rows
    private readonly DeviceTensor _dPre;                // flat [maxRows·maxOut]: the scaled output gradient
    private readonly int _chunkRows;
    private readonly DeviceTensor _ct, _gram, _bg;      // [r·maxOut] A·W0ᵀ, [r, r] A·Aᵀ, [maxOut·r] B·A·Aᵀ
    private readonly HashSet<(int, TargetModule)> _current = [];   // norms taken since Training was last set
    private DeviceLlama? _model;
    private DeviceTensor? _pendingDy;                   // the output gradient LinearOutputBackward saw, for dm
    private bool _training;

    /// <summary>Output rows over all layers and targets: the length of the per-row buffers.</summary>
    public static long NormRows(LlamaConfig c, AdapterConfig a) => c.NLayers * a.Targets.Sum(t => (long)c.LinearShape(t).Out);

    /// <summary>The widest output among the targets.</summary>
    public static long MaxOut(LlamaConfig c, AdapterConfig a) => a.Targets.Max(t => (long)c.LinearShape(t).Out);

    /// <summary>Rows of the pre-scale output recomputed at a time in backward (the scratch holds this many rows).</summary>
    public const int DefaultChunkRows = 256;

    /// <summary>Rows the pre-scale scratch holds for <paramref name="maxRows"/> rows in a step.</summary>
    public static int ChunkRows(long maxRows, int chunkRows = DefaultChunkRows) => (int)Math.Max(1, Math.Min(maxRows, chunkRows));

    /// <param name="chunkRows">Rows of the pre-scale output recomputed at a time in backward (tests lower it to exercise the chunking).</param>
    public DoraRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows, int chunkRows = DefaultChunkRows)
    {
        if (a.Method is not DoraMethod) throw new ArgumentException("DoraRuntime serves DoRA adapters");
        _c = c;
        _a = a;
        _p = p;
        long offset = 0;
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in a.Targets)
            {
                _rowOffset[(l, t)] = offset;
                offset += c.LinearShape(t).Out;
            }
        long maxOut = MaxOut(c, a);
        using var scope = new TensorScope();
        DeviceTensor T(string name, long n) => scope.Add(DeviceTensor.Create(ctx, name, DType.F32, [n], MemoryCategory.Workspace));
        _w2 = T("dora.base_row_sumsq", offset);
        _scale = T("dora.scale", offset);
        _invN = T("dora.inv_norm", offset);
        _chunkRows = ChunkRows(maxRows, chunkRows);
        _pre = T("dora.pre_scale", _chunkRows * maxOut);
        _dPre = T("dora.d_pre_scale", maxRows * maxOut);
        int rank = a.SettingsOf<LoraSettings>().Rank;
        _ct = T("dora.a_w0t", rank * maxOut);
        _gram = T("dora.a_at", (long)rank * rank);
        _bg = T("dora.b_a_at", maxOut * rank);
        _lora = scope.Add(new LoraRuntime(ctx, c, a, p, maxRows));
        _owned = scope.Keep();
    }

    public bool Training
    {
        get => _training;
        set
        {
            // A loaded adapter may record PEFT's training dropout (inference ignores it); training here has none.
            if (value && _a.SettingsOf<LoraSettings>().Dropout is > 0 and var p) throw new FormatException($"{LoraMethod.DropoutOption.Flag} {p}: DoRA trains with dropout 0 only");
            _training = value;
            _lora.Training = value;
            _current.Clear();   // the parameters may have changed since the norms were taken
        }
    }

    public uint StepSeed { get => _lora.StepSeed; set => _lora.StepSeed = value; }

    /// <summary>Takes ‖W0_j‖² of every targeted linear of <paramref name="model"/>, decoded on the device.</summary>
    public void AttachBase(DeviceLlama model)
    {
        if (ReferenceEquals(model, _model)) return;
        foreach (var ((l, t), off) in _rowOffset)
            model.Layers[l].Linear(t).RowNorms(Rows(_w2, l, t), squared: true);
        _model = model;
        _current.Clear();
    }

    private bool Has(TargetModule t) => _a.Targets.Contains(t);

    public bool TransformsLinearOutput(TargetModule target) => Has(target);

    private DeviceTensor Rows(DeviceTensor perRow, int l, TargetModule t) => perRow.RowsView(_rowOffset[(l, t)], _c.LinearShape(t).Out);

    private static DeviceTensor View(DeviceTensor flat, long rows, long cols) => flat.RowsView(0, rows * cols).Reshape(rows, cols);

    private DeviceLinear Base(int l, TargetModule t) =>
        (_model ?? throw new InvalidOperationException("DoRA runtime used before AttachBase")).Layers[l].Linear(t);

    /// <summary>The per-row m/n of (l, t), computed from the current A, B and m once after Training was last set.</summary>
    private DeviceTensor Scale(int l, TargetModule t)
    {
        var scale = Rows(_scale, l, t);
        if (_current.Contains((l, t))) return scale;
        int outF = _c.LinearShape(t).Out, r = _a.SettingsOf<LoraSettings>().Rank;
        var a = _p[AdapterWeights.LoraA(l, t)];   // [r, in]
        var b = _p[AdapterWeights.LoraB(l, t)];   // [out, r]
        var m = _p[DoraMethod.MagnitudeName(l, t)];   // [out]
        var ct = View(_ct, r, outF);
        Base(l, t).Forward(a, ct);                                  // A·W0ᵀ [r, out]
        var gram = _gram.Reshape(r, r);
        MatMul.Run(a, a, gram, transposeB: true);                   // A·Aᵀ [r, r]
        var bg = View(_bg, outF, r);
        MatMul.Run(b, gram, bg, transposeB: false);                 // B·A·Aᵀ [out, r]
        DoraOps.NormScale(Rows(_w2, l, t), b, ct, bg, m, _a.SettingsOf<LoraSettings>().Scaling, scale, Rows(_invN, l, t));
        _current.Add((l, t));
        return scale;
    }

    /// <summary>The current 1/n per row of (l, t) and m/n, for tests: [out] each, downloaded.</summary>
    public (float[] InvNorm, float[] Scale) NormsOf(int l, TargetModule t)
    {
        Scale(l, t);
        return (Rows(_invN, l, t).ToArray<float>(), Rows(_scale, l, t).ToArray<float>());
    }

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y)
    {
        if (!Has(target)) return;
        var scale = Scale(layer, target);
        _lora.Linear(layer, target, x, y);
        DoraOps.ScaleColumns(y, scale, y);
    }

    public DeviceTensor LinearOutputBackward(int layer, TargetModule target, DeviceTensor dy)
    {
        if (!Has(target)) return dy;
        _pendingDy = dy;   // unchanged until this target's LinearBackward (DecoderLayer's order: output, base input, branch)
        var dPre = View(_dPre, dy.Rows, dy.RowElements);
        DoraOps.ScaleColumns(dy, Rows(_scale, layer, target), dPre);
        return dPre;
    }

    public bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false)
    {
        if (!Has(target)) return false;
        var dyOut = _pendingDy ?? throw new InvalidOperationException("DoRA: LinearBackward without LinearOutputBackward");
        _pendingDy = null;
        // dm += Σ_rows dy_out ⊙ (W0·x + s·B·A·x) / n, the pre-scale output recomputed from x chunk by chunk of rows (all
        // before dx may overwrite x).
        var m = _p.ByName[DoraMethod.MagnitudeName(layer, target)];
        var invN = Rows(_invN, layer, target);
        for (long start = 0; start < x.Rows; start += _chunkRows)
        {
            long n = Math.Min(_chunkRows, x.Rows - start);
            var xc = x.RowsView(start, n);
            var pre = View(_pre, n, dy.RowElements);
            Base(layer, target).Forward(xc, pre);
            _lora.Linear(layer, target, xc, pre);
            DoraOps.ScaleColumns(pre, invN, pre);
            BasicOps.Mul(pre, dyOut.RowsView(start, n), pre);
            Bias.Grad(pre, m.Grad!, accumulate: true);
        }
        return _lora.LinearBackward(layer, target, x, dy, dx, overwriteDx);
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
