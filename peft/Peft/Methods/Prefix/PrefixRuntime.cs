// Prefix tuning's device runtime: the joined attention-prefix hook. Each layer's learned keys and values [n, kv_dim]
// overwrite the prefix rows of the layer's keys and values (AttentionPrefixRows); the backward adds each sequence's
// ∂keys and ∂values of those rows to the gradients, in sequence order. With --prefix-projection the prefix is the
// projection MLP's output (PrefixProjection), computed when layer 0 asks for it — once per forward, so once per prompt
// during generation — and the backward chains through the MLP. No hook around any linear or block.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Prefix;

public sealed class PrefixRuntime : ITrainableAdapter, IAttentionPrefixHook, IDisposable
{
    private readonly TrainableTensor[] _keys = [], _values = [];   // per layer [n, kv_dim]; none with the projection
    private readonly PrefixProjection? _projection;

    public PrefixRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p)
    {
        var s = PrefixMethod.Settings(a);
        PrefixLength = s.VirtualTokens;
        if (s.Projection)
        {
            _projection = new PrefixProjection(ctx, c, s, p);
            return;
        }
        _keys = [.. Enumerable.Range(0, c.NLayers).Select(l => p.ByName[PrefixMethod.KeysName(l)])];
        _values = [.. Enumerable.Range(0, c.NLayers).Select(l => p.ByName[PrefixMethod.ValuesName(l)])];
    }

    public bool Training { get; set; }
    public uint StepSeed { get; set; }

    /// <summary>No branch beside any linear.</summary>
    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y) { }

    public IAttentionPrefixHook AttentionPrefix => this;

    public int PrefixLength { get; }

    public bool Gated => false;

    public (DeviceTensor Keys, DeviceTensor Values, DeviceTensor? Gate) Prefix(int layer)
    {
        if (_projection is null) return (_keys[layer].Param, _values[layer].Param, null);
        if (layer == 0) _projection.Forward();
        var (keys, values) = _projection.Prefix(layer);
        return (keys, values, null);
    }

    /// <summary>With the projection: the batch's ∂keys and ∂values summed in sequence order, then one pass through the MLP.</summary>
    public void PrefixBackwardBatch(int layer, DeviceTensor dK, DeviceTensor dV, int batch, int seqLen)
    {
        if (_projection is null)
        {
            AttentionPrefixRows.PerSequenceBackward(this, layer, dK, dV, batch, seqLen);
            return;
        }
        var (sumK, sumV) = _projection.GradientSums;
        BasicOps.Copy(dK.RowsView(0, PrefixLength), sumK);
        BasicOps.Copy(dV.RowsView(0, PrefixLength), sumV);
        for (int b = 1; b < batch; b++)
        {
            BasicOps.Add(sumK, dK.RowsView((long)b * seqLen, PrefixLength), sumK);
            BasicOps.Add(sumV, dV.RowsView((long)b * seqLen, PrefixLength), sumV);
        }
        _projection.Backward(layer, sumK, sumV);
    }

    public void PrefixBackward(int layer, DeviceTensor dKeys, DeviceTensor dValues, DeviceTensor? dGate)
    {
        if (_projection is not null)
        {
            _projection.Backward(layer, dKeys, dValues);
            return;
        }
        Accumulate(_keys[layer], dKeys);
        Accumulate(_values[layer], dValues);
    }

    private static void Accumulate(TrainableTensor t, DeviceTensor d)
    {
        var grad = t.Grad ?? throw new InvalidOperationException("the prefix was loaded for inference: it has no gradient");
        BasicOps.Add(grad, d, grad);
    }

    public void Dispose() => _projection?.Dispose();
}
