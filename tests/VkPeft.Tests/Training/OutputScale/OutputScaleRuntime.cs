// The toy method's device runtime. Output side: y ← s·y after the target linear (an output transform, not an additive
// branch), backward ∂s += Σ dy ⊙ y_pre and ∂y_pre = s·dy; in training the pre-scale output of every layer is kept.
// Input side: the base reads s·x (a before-linear transform), backward g = dy·W, ∂s += Σ x ⊙ g, dx (+)= s·g. The scalar
// products run as K = 1 matmuls against the [1, 1] parameter, so s never leaves the device.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Tests.Training.OutputScale;

public sealed class OutputScaleRuntime : ITrainableAdapter, IDisposable
{
    private readonly TargetModule _target;
    private readonly bool _input;
    private readonly TrainableParameters _p;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor _scratch;        // [maxRows, out]
    private readonly DeviceTensor[]? _saved;       // per layer [maxRows, out]: the pre-scale output (trainable only)

    public OutputScaleRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows)
    {
        _target = OutputScaleMethod.Target(a);
        _input = OutputScaleMethod.Settings(a).Input;
        _p = p;
        var (outF, inF) = c.LinearShape(_target);
        using var scope = new TensorScope();
        DeviceTensor Create(string name, MemoryCategory category, int width) =>
            scope.Add(DeviceTensor.Create(ctx, name, DType.F32, [maxRows, width], category));
        _scratch = Create("output_scale.scratch", MemoryCategory.Workspace, Math.Max(outF, inF));
        if (p.WithOptimizer && !_input) _saved = [.. Enumerable.Range(0, c.NLayers).Select(l => Create($"output_scale.saved.{l}", MemoryCategory.Activations, outF))];
        _owned = scope.Keep();
    }

    public bool Training { get; set; }
    public uint StepSeed { get; set; }

    private TrainableTensor Scale(int layer) => _p.ByName[OutputScaleMethod.ScaleName(layer, _target)];

    private static DeviceTensor Column(DeviceTensor t) => t.Reshape(t.Count, 1);   // [rows·out, 1]

    /// <summary>The first rows·width elements of the scratch as [rows, width].</summary>
    private DeviceTensor Scratch(long rows, long width) => _scratch.Reshape(_scratch.Count).RowsView(0, rows * width).Reshape(rows, width);

    private static DeviceTensor Rows(DeviceTensor t, long rows) => t.RowsView(0, rows);

    public bool TransformsLinearOutput(TargetModule target) => target == _target && !_input;

    public bool TransformsLinearInput(TargetModule target) => target == _target && _input;

    public DeviceTensor LinearInput(int layer, TargetModule target, DeviceTensor x)
    {
        if (!TransformsLinearInput(target)) return x;
        var scaled = Scratch(x.Rows, x.RowElements);
        MatMul.Run(Column(x), Scale(layer).Param.Reshape(1, 1), Column(scaled), transposeB: true);
        return scaled;
    }

    public bool LinearInputBackward(int layer, TargetModule target, DeviceLinear w, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool accumulate)
    {
        if (!TransformsLinearInput(target)) return false;
        var s = Scale(layer);
        var g = Scratch(x.Rows, x.RowElements);   // ∂loss/∂(s·x) = dy·W
        w.InputGrad(dy, g);
        MatMulTn.Run(Column(x), Column(g), s.Grad!.Reshape(1, 1), alpha: 1, beta: 1);
        MatMul.Run(Column(g), s.Param.Reshape(1, 1), Column(dx), transposeB: true, beta: accumulate ? 1 : 0);
        return true;
    }

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y)
    {
        if (!TransformsLinearOutput(target)) return;
        var pre = Training ? Rows(_saved![layer], y.Rows) : Scratch(y.Rows, y.RowElements);
        BasicOps.Copy(y, pre);
        MatMul.Run(Column(pre), Scale(layer).Param.Reshape(1, 1), Column(y), transposeB: true);
    }

    public DeviceTensor LinearOutputBackward(int layer, TargetModule target, DeviceTensor dy)
    {
        if (!TransformsLinearOutput(target)) return dy;
        var s = Scale(layer);
        MatMulTn.Run(Column(dy), Column(Rows(_saved![layer], dy.Rows)), s.Grad!.Reshape(1, 1), alpha: 1, beta: 1);
        var dPre = Scratch(dy.Rows, dy.RowElements);
        MatMul.Run(Column(dy), s.Param.Reshape(1, 1), Column(dPre), transposeB: true);
        return dPre;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
