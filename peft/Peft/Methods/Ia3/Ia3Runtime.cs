// (IA)³'s device runtime. Output side (k, v): y ← y ⊙ l after the base linear (before RoPE); backward ∂l += Σ_rows
// dy ⊙ y_pre and ∂y_pre = dy ⊙ l; in training the unscaled output of every layer and target is kept. Input side
// (down): the base reads x ⊙ l; backward g = dy·W, ∂l += Σ_rows x ⊙ g, dx (+)= g ⊙ l. The vector is broadcast over
// rows as a K = 1 product ones[rows, 1]·l[1, width] (exact), so l never leaves the device; the row sums use the
// deterministic column-sum of the bias gradient.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Ia3;

public sealed class Ia3Runtime : ITrainableAdapter, IDisposable
{
    private readonly AdapterConfig _config;
    private readonly TrainableParameters _p;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor _ones;                // [maxRows, 1]
    private readonly DeviceTensor _scaled;              // [maxRows, width]: the scaled input, or the unscaled output at inference
    private readonly DeviceTensor _broadcast;           // [maxRows, width]: l repeated over rows
    private readonly DeviceTensor _product;             // [maxRows, width]: gradients and products
    private readonly Dictionary<(int Layer, TargetModule Target), DeviceTensor> _saved = [];   // [maxRows, out] unscaled outputs (training)

    /// <summary>The widest scaled side over the configuration's targets (the scratch width).</summary>
    public static long ScratchWidth(LlamaConfig c, AdapterConfig a) =>
        a.Targets.Select(t => (long)(Ia3Method.ScalesInput(a, t) ? c.LinearShape(t).In : c.LinearShape(t).Out)).DefaultIfEmpty(1).Max();

    public Ia3Runtime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows)
    {
        _config = a;
        _p = p;
        long width = ScratchWidth(c, a);
        using var scope = new TensorScope();
        DeviceTensor Create(string name, MemoryCategory category, long cols) =>
            scope.Add(DeviceTensor.Create(ctx, name, DType.F32, [maxRows, cols], category));
        _ones = Create("ia3.ones", MemoryCategory.Workspace, 1);
        _scaled = Create("ia3.scaled", MemoryCategory.Workspace, width);
        _broadcast = Create("ia3.broadcast", MemoryCategory.Workspace, width);
        _product = Create("ia3.product", MemoryCategory.Workspace, width);
        BasicOps.Fill(_ones, 1);
        if (p.WithOptimizer)
            for (int l = 0; l < c.NLayers; l++)
                foreach (var t in a.Targets.Where(t => !Ia3Method.ScalesInput(a, t)))
                    _saved[(l, t)] = Create($"ia3.saved.{l}.{AdapterWeights.TargetName(t)}", MemoryCategory.Activations, c.LinearShape(t).Out);
        _owned = scope.Keep();
    }

    public bool Training { get; set; }
    public uint StepSeed { get; set; }

    private TrainableTensor Vector(int layer, TargetModule t) => _p.ByName[Ia3Method.VectorName(layer, t)];

    /// <summary>The first rows·width elements of a scratch buffer as [rows, width].</summary>
    private static DeviceTensor View(DeviceTensor t, long rows, long width) => t.Reshape(t.Count).RowsView(0, rows * width).Reshape(rows, width);

    /// <summary>l [width] repeated over <paramref name="rows"/> rows: [rows, width].</summary>
    private DeviceTensor Broadcast(TrainableTensor l, long rows)
    {
        long width = l.Param.Count;
        var b = View(_broadcast, rows, width);
        MatMul.Run(_ones.RowsView(0, rows), l.Param.Reshape(1, width), b, transposeB: false);
        return b;
    }

    /// <summary>∂l += Σ_rows a ⊙ b (a, b [rows, width]).</summary>
    private void AccumulateGrad(TrainableTensor l, DeviceTensor a, DeviceTensor b)
    {
        var prod = View(_product, a.Rows, a.RowElements);
        BasicOps.Mul(a, b, prod);
        Bias.Grad(prod, l.Grad!.Reshape(l.Param.Count), accumulate: true);
    }

    private bool Has(TargetModule target) => _config.Targets.Contains(target);

    public bool TransformsLinearOutput(TargetModule target) => Has(target) && !Ia3Method.ScalesInput(_config, target);

    public bool TransformsLinearInput(TargetModule target) => Has(target) && Ia3Method.ScalesInput(_config, target);

    public DeviceTensor LinearInput(int layer, TargetModule target, DeviceTensor x)
    {
        if (!TransformsLinearInput(target)) return x;
        var scaled = View(_scaled, x.Rows, x.RowElements);
        BasicOps.Mul(x, Broadcast(Vector(layer, target), x.Rows), scaled);
        return scaled;
    }

    public bool LinearInputBackward(int layer, TargetModule target, DeviceLinear w, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool accumulate)
    {
        if (!TransformsLinearInput(target)) return false;
        var l = Vector(layer, target);
        var g = View(_scaled, x.Rows, x.RowElements);   // ∂loss/∂(x ⊙ l) = dy·W  [rows, in]
        w.InputGrad(dy, g);
        AccumulateGrad(l, x, g);
        var bl = Broadcast(l, x.Rows);
        if (accumulate)
        {
            var prod = View(_product, x.Rows, x.RowElements);
            BasicOps.Mul(g, bl, prod);
            BasicOps.Add(dx, prod, dx);
        }
        else BasicOps.Mul(g, bl, dx);
        return true;
    }

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y)
    {
        if (!TransformsLinearOutput(target)) return;
        var pre = Training ? _saved[(layer, target)].RowsView(0, y.Rows) : View(_scaled, y.Rows, y.RowElements);
        BasicOps.Copy(y, pre);
        BasicOps.Mul(pre, Broadcast(Vector(layer, target), y.Rows), y);
    }

    public DeviceTensor LinearOutputBackward(int layer, TargetModule target, DeviceTensor dy)
    {
        if (!TransformsLinearOutput(target)) return dy;
        var l = Vector(layer, target);
        AccumulateGrad(l, dy, _saved[(layer, target)].RowsView(0, dy.Rows));
        var dPre = View(_scaled, dy.Rows, dy.RowElements);
        BasicOps.Mul(dy, Broadcast(l, dy.Rows), dPre);
        return dPre;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
