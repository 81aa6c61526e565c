// Prefix tuning's reparameterization on the device (PEFT PrefixEncoder with prefix_projection): from the virtual-token
// embedding E [n, token_dim], Z = E·W1ᵀ + b1, H = tanh Z [n, hidden], and per layer ℓ the keys H·W2[2ℓ·t…]ᵀ + b2[2ℓ] and
// values H·W2[(2ℓ+1)·t…]ᵀ + b2[2ℓ+1] [n, token_dim] (t = token_dim, the K/V width) — the row blocks of PEFT's second
// linear in its prompt_embeddings packing. Forward computes every layer's prefix once (before layer 0 reads it); the
// backward of one layer's ∂keys and ∂values (a batch's, summed by the runtime) chains straight through the MLP into every
// tensor's gradient (the map from ∂prefix to parameter gradients is linear, so per-layer chaining sums to the step's).
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Prefix;

public sealed class PrefixProjection : IDisposable
{
    private readonly int _kvDim;
    private readonly TrainableTensor _embedding, _w1, _b1, _w2, _b2;   // [n, t], [hidden, t], [hidden], [2L·t, hidden], [2L, t]
    private readonly DeviceTensor _z, _h, _dh, _dz;                     // [n, hidden]
    private readonly DeviceTensor[] _keys, _values;                     // per layer [n, t]
    private readonly DeviceTensor _dKeySum, _dValueSum;                 // [n, t]
    private readonly IReadOnlyList<IDisposable> _owned;

    public PrefixProjection(VulkanContext ctx, LlamaConfig c, PrefixSettings s, TrainableParameters p)
    {
        _kvDim = c.KvDim;
        int n = s.VirtualTokens, hidden = s.Hidden(c);
        TrainableTensor Get(string name, params long[] shape)
        {
            var t = p.ByName.TryGetValue(name, out var found) ? found : throw new ArgumentException($"prefix projection: tensor '{name}' is missing");
            if (!t.Shape.SequenceEqual(shape))
                throw new ArgumentException($"prefix projection: tensor '{name}' is [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}]");
            return t;
        }
        _embedding = Get(PrefixMethod.EmbeddingName, n, c.KvDim);
        _w1 = Get(PrefixMethod.HiddenWeightName, hidden, c.KvDim);
        _b1 = Get(PrefixMethod.HiddenBiasName, hidden);
        _w2 = Get(PrefixMethod.OutputWeightName, 2L * c.NLayers * c.KvDim, hidden);
        _b2 = Get(PrefixMethod.OutputBiasName, 2L * c.NLayers, c.KvDim);

        using var scope = new TensorScope();
        DeviceTensor Create(string name, params long[] shape) => scope.Add(DeviceTensor.Create(ctx, name, DType.F32, shape, MemoryCategory.Workspace));
        _z = Create("prefix.projection.z", n, hidden);
        _h = Create("prefix.projection.h", n, hidden);
        _dh = Create("prefix.projection.dh", n, hidden);
        _dz = Create("prefix.projection.dz", n, hidden);
        _keys = [.. Enumerable.Range(0, c.NLayers).Select(l => Create($"prefix.projection.keys.{l}", n, c.KvDim))];
        _values = [.. Enumerable.Range(0, c.NLayers).Select(l => Create($"prefix.projection.values.{l}", n, c.KvDim))];
        _dKeySum = Create("prefix.projection.dkeys", n, c.KvDim);
        _dValueSum = Create("prefix.projection.dvalues", n, c.KvDim);
        _owned = scope.Keep();
    }

    /// <summary>Layer <paramref name="layer"/>'s computed keys and values [n, token_dim] (after <see cref="Forward"/>).</summary>
    public (DeviceTensor Keys, DeviceTensor Values) Prefix(int layer) => (_keys[layer], _values[layer]);

    /// <summary>Scratch [n, token_dim] where the runtime sums a batch's ∂keys and ∂values before <see cref="Backward"/>.</summary>
    public (DeviceTensor Keys, DeviceTensor Values) GradientSums => (_dKeySum, _dValueSum);

    private DeviceTensor OutputWeight(int block) => _w2.Param.RowsView((long)block * _kvDim, _kvDim);   // [t, hidden]

    /// <summary>Computes every layer's prefix from the current parameters.</summary>
    public void Forward()
    {
        MatMul.Run(_embedding.Param, _w1.Param, _z, transposeB: true);
        Bias.Add(_z, _b1.Param);
        Activation.Forward(ActivationKind.Tanh, _z, _h);
        for (int l = 0; l < _keys.Length; l++)
        {
            Output(2 * l, _keys[l]);
            Output(2 * l + 1, _values[l]);
        }
    }

    private void Output(int block, DeviceTensor y)
    {
        MatMul.Run(_h, OutputWeight(block), y, transposeB: true);
        Bias.Add(y, _b2.Param.RowsView(block, 1));
    }

    /// <summary>Adds the gradients of every MLP tensor and the embedding for ∂keys, ∂values [n, token_dim] of one layer.</summary>
    public void Backward(int layer, DeviceTensor dKeys, DeviceTensor dValues)
    {
        var gW2 = Grad(_w2);
        var gB2 = Grad(_b2);
        (DeviceTensor D, int Block)[] parts = [(dKeys, 2 * layer), (dValues, 2 * layer + 1)];
        for (int i = 0; i < parts.Length; i++)
        {
            var (d, block) = parts[i];
            MatMulTn.Run(d, _h, gW2.RowsView((long)block * _kvDim, _kvDim), alpha: 1, beta: 1);   // ∂W2 block [t, hidden] += dᵀ·H
            Bias.Grad(d, gB2.RowsView(block, 1), accumulate: true);
            MatMul.Run(d, OutputWeight(block), _dh, transposeB: false, alpha: 1, beta: i == 0 ? 0 : 1);   // ∂H [n, hidden]
        }
        Activation.Backward(ActivationKind.Tanh, _z, _dh, _dz);
        MatMulTn.Run(_dz, _embedding.Param, Grad(_w1), alpha: 1, beta: 1);   // ∂W1 [hidden, t] += ∂Zᵀ·E
        Bias.Grad(_dz, Grad(_b1), accumulate: true);
        MatMul.Run(_dz, _w1.Param, Grad(_embedding), transposeB: false, alpha: 1, beta: 1);   // ∂E [n, t] += ∂Z·W1
    }

    private static DeviceTensor Grad(TrainableTensor t) =>
        t.Grad ?? throw new InvalidOperationException("the prefix projection was loaded for inference: it has no gradient");

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
