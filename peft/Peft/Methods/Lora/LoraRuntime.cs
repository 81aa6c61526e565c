// LoRA and QA-LoRA on the device: y += s·B·A·x̃ after each targeted base linear, where x̃ is the (dropped-out) input —
// for QA-LoRA the mean of each group of g inputs, so A is [r, in/g]. Forward hooks for training and inference, and the
// backward that accumulates dA, dB and adds the branch's input gradient. Used by training and inference alike.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Lora;

public sealed class LoraRuntime : ITrainableAdapter, IDisposable
{
    private readonly LlamaConfig _c;
    private readonly HashSet<TargetModule> _targets;
    private readonly bool _qa;
    private readonly int _g;
    private readonly LoraSettings _s;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor _xd, _xp, _t, _dt, _dsrc, _dx;   // flat scratch, viewed per call

    public LoraRuntime(VulkanContext ctx, LlamaConfig config, AdapterConfig adapter, TrainableParameters parameters, int maxRows)
    {
        if (adapter.Method is not LoraMethod method) throw new ArgumentException("LoraRuntime serves LoRA and QA-LoRA adapters");
        _s = adapter.SettingsOf<LoraSettings>();
        if (_s.Rank < 1) throw new FormatException($"{LoraMethod.RankOption.Flag} must be ≥ 1, got {_s.Rank}");
        if (_s.Dropout is < 0 or >= 1) throw new FormatException($"{LoraMethod.DropoutOption.Flag} must be in [0, 1), got {_s.Dropout}");
        _c = config;
        Config = adapter;
        Parameters = parameters;
        _targets = [.. adapter.Targets];
        _qa = method.GroupPooled;
        _g = _qa ? adapter.SettingsOf<QaLoraSettings>().GroupSize : 1;
        if (_qa)
            foreach (var t in _targets)
                if (InFeatures(t) % _g != 0)
                    throw new SettingException($"{EngineSettings.GroupSize} {_g} does not divide in_features {InFeatures(t)} of target {t.ToString().ToLowerInvariant()}; QA-LoRA needs it to");
        int maxIn = _targets.Max(InFeatures);
        using var scope = new TensorScope();
        // Scratch is viewed as [rows, width] for several widths: stored in rows of lcm(widths) elements, so that where a
        // long sequence splits it over bindings, every boundary falls between rows of each view.
        long unit = ScratchUnit(config, adapter);
        DeviceTensor Flat(string name, long n)
        {
            if (n <= 1)
            {
                var one = DeviceTensor.Create(ctx, name, DType.F32, [1], MemoryCategory.Workspace);   // unused placeholder
                return scope.Add(one);
            }
            long rows = (n + unit - 1) / unit;
            var t = DeviceTensor.Create(ctx, name, DType.F32, [rows, unit], MemoryCategory.Workspace);
            scope.Add(t);
            return t.Reshape(rows * unit);
        }
        // Input-sized scratch only where the branch input differs from x: dropout (x̃ and its gradient) or QA-LoRA pooling.
        bool dropout = _s.Dropout > 0;
        _xd = Flat("lora.x_dropped", dropout ? (long)maxRows * maxIn : 1);
        _xp = Flat("lora.x_pooled", _qa ? (long)maxRows * (maxIn / _g) : 1);
        _t = Flat("lora.t", (long)maxRows * _s.Rank);
        _dt = Flat("lora.dt", (long)maxRows * _s.Rank);
        _dsrc = Flat("lora.d_src", dropout || _qa ? (long)maxRows * maxIn : 1);
        _dx = Flat("lora.dx", dropout || _qa ? (long)maxRows * maxIn : 1);
        _owned = scope.Keep();
    }

    public AdapterConfig Config { get; }
    public TrainableParameters Parameters { get; }
    /// <summary>Training: dropout is applied (with <see cref="StepSeed"/>); inference: never.</summary>
    public bool Training { get; set; }
    /// <summary>Seed of this micro-step's dropout masks; the backward reuses it.</summary>
    public uint StepSeed { get; set; }

    public int InFeatures(TargetModule t) => _c.LinearShape(t).In;

    /// <summary>Elements per storage row of the scratch buffers: lcm of the rank and every input width viewed.</summary>
    public static long ScratchUnit(LlamaConfig c, AdapterConfig a)
    {
        long unit = a.SettingsOf<LoraSettings>().Rank;
        foreach (var t in a.Targets)
        {
            int inF = c.LinearShape(t).In;
            unit = Lcm(Lcm(unit, inF), a.Method is LoraMethod { GroupPooled: true } ? inF / a.SettingsOf<QaLoraSettings>().GroupSize : 1);
        }
        return unit;
    }

    private static long Lcm(long a, long b)
    {
        long x = a, y = b;
        while (y != 0) (x, y) = (y, x % y);
        return a / x * b;
    }

    private static DeviceTensor View(DeviceTensor flat, long rows, long cols) => flat.RowsView(0, rows * cols).Reshape(rows, cols);

    private uint Seed(int l, TargetModule t) => unchecked(StepSeed * 0x9E3779B1u + (uint)(l * 16 + (int)t) * 0x85EBCA77u + 1u);

    /// <summary>The branch input x̃: dropout (training) then group means (QA-LoRA).</summary>
    private DeviceTensor Source(int l, TargetModule t, DeviceTensor x)
    {
        long rows = x.Rows;
        var src = x;
        if (Training && _s.Dropout > 0)
        {
            var xd = View(_xd, rows, x.RowElements);
            Dropout.Apply(x, xd, _s.Dropout, Seed(l, t));
            src = xd;
        }
        if (_qa)
        {
            var xp = View(_xp, rows, x.RowElements / _g);
            GroupPool.Forward(src, xp, _g);
            src = xp;
        }
        return src;
    }

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y)
    {
        if (!_targets.Contains(target)) return;
        var a = Parameters[AdapterWeights.LoraA(layer, target)];
        var b = Parameters[AdapterWeights.LoraB(layer, target)];
        var src = Source(layer, target, x);
        var t = View(_t, x.Rows, _s.Rank);
        MatMul.Run(src, a, t, transposeB: true);
        MatMul.Run(t, b, y, transposeB: true, alpha: _s.Scaling, beta: 1);
    }

    public void AttentionOutput(int layer, DeviceTensor z) { }

    public void MlpOutput(int layer, DeviceTensor h, DeviceTensor z) { }

    public bool HasBlockHooks => false;

    public void AttentionOutputBackward(int layer, DeviceTensor dzIn, DeviceTensor dzOut) => throw new NotSupportedException("LoRA has no block hooks");

    public void MlpOutputBackward(int layer, DeviceTensor h, DeviceTensor dzIn, DeviceTensor dzOut, DeviceTensor dh) => throw new NotSupportedException("LoRA has no block hooks");

    /// <summary>
    /// Backward of the branch at (layer, target) for input x and output gradient dy: dB += s·dyᵀ·t, dA += (s·dy·B)ᵀ·x̃ (not for a frozen A),
    /// and dx += ∂x̃ᵀ(s·dy·B·A) — accumulates into dA, dB and dx (with <paramref name="overwriteDx"/>, dx = …, written
    /// after the last read of x, so dx may alias x).
    /// </summary>
    public bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false)
    {
        if (!_targets.Contains(target)) return false;
        var pa = Parameters.ByName[AdapterWeights.LoraA(layer, target)];
        var pb = Parameters.ByName[AdapterWeights.LoraB(layer, target)];
        long rows = x.Rows;
        var src = Source(layer, target, x);
        var t = View(_t, rows, _s.Rank);
        MatMul.Run(src, pa.Param, t, transposeB: true);
        MatMulTn.Run(dy, t, pb.Grad!, alpha: _s.Scaling, beta: 1);
        var dt = View(_dt, rows, _s.Rank);
        MatMul.Run(dy, pb.Param, dt, transposeB: false, alpha: _s.Scaling);
        if (pa.Grad != null) MatMulTn.Run(dt, src, pa.Grad, alpha: 1, beta: 1);   // none for a frozen A (LoRA-FA)
        bool dropout = Training && _s.Dropout > 0;
        if (!_qa && !dropout)
        {
            MatMul.Run(dt, pa.Param, dx, transposeB: false, beta: overwriteDx ? 0 : 1);
            return true;
        }
        var dsrc = View(_dsrc, rows, src.RowElements);
        MatMul.Run(dt, pa.Param, dsrc, transposeB: false);
        var dxb = View(_dx, rows, x.RowElements);
        if (_qa) GroupPool.Backward(dsrc, dxb, _g, accumulate: false);
        else BasicOps.Copy(dsrc, dxb);
        if (dropout) Dropout.Apply(dxb, dxb, _s.Dropout, Seed(layer, target));
        if (overwriteDx) BasicOps.Copy(dxb, dx);
        else BasicOps.Add(dx, dxb, dx);
        return true;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
