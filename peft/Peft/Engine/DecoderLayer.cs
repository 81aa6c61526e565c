// One decoder layer on the device, forward and backward side by side: pre-norm attention with RoPE and grouped-query
// heads, then the SwiGLU MLP, each added to the residual stream, with the adapter's hooks around every base linear and
// block (IAdapterRuntime); the backward flows input gradients through every frozen linear into the adapter's tensors.
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public static class DecoderLayer
{
    /// <summary>
    /// x_out = layer(x_in) for <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens at positions
    /// startPos…; with <paramref name="kCache"/>/<paramref name="vCache"/> (batch 1) keys and values are appended to
    /// the cache and attention reads it. x_out may be x_in.
    /// </summary>
    public static void Forward(DeviceLlama model, int l, LayerState s, DeviceTensor xIn, DeviceTensor xOut, int batch, int seqLen, int startPos,
        IAdapterRuntime? adapter, DeviceTensor? kCache = null, DeviceTensor? vCache = null)
    {
        var c = model.Config;
        var layer = model.Layers[l];
        int rows = batch * seqLen;
        DeviceTensor R(DeviceTensor t) => LayerState.Rows(t, rows);
        var (h1, q, k, v, o, xMid, h2, g, u, sw, z) = (R(s.H1), R(s.Q), R(s.K), R(s.V), R(s.O), R(s.XMid), R(s.H2), R(s.G), R(s.U), R(s.S), R(s.Z));
        float eps = (float)c.RmsNormEps;

        if (kCache != null)
        {
            if (batch != 1) throw new ArgumentException("a KV cache serves one sequence at a time");
            if (startPos + seqLen > kCache.Rows) throw new ArgumentException($"sequence of {startPos + seqLen} tokens exceeds the {kCache.Rows}-token cache");
            k = kCache.RowsView(startPos, seqLen);     // keys and values go straight into the cache rows
            v = vCache!.RowsView(startPos, seqLen);
        }
        // In place (inference: x_out is x_in and no adapter transforms whole blocks), the o-projection and the MLP output
        // accumulate straight into the residual stream: no separate block output, no residual adds.
        bool inPlace = ReferenceEquals(xIn, xOut) && adapter is not ITrainableAdapter { HasBlockHooks: true }
            && adapter?.TransformsLinearOutput(TargetModule.O) != true && adapter?.TransformsLinearOutput(TargetModule.Down) != true;
        if (adapter?.AttentionPrefix is { Gated: true })
            throw new NotSupportedException("a gated attention prefix needs its own softmax in the attention kernel, which the device runtime does not have yet");

        RmsNorm.Forward(xIn, NormWeight(adapter, l, LlamaTensorKind.AttnNorm, layer.AttnNorm), h1, eps);
        Linear(adapter, l, TargetModule.Q, layer.Wq, h1, q, layer.Bq);
        Linear(adapter, l, TargetModule.K, layer.Wk, h1, k, layer.Bk);
        Linear(adapter, l, TargetModule.V, layer.Wv, h1, v, layer.Bv);
        Rope.Apply(q, q, model.InvFreq, c.HeadDim, model.Pairing, startPos, seqLen);
        Rope.Apply(k, k, model.InvFreq, c.HeadDim, model.Pairing, startPos, seqLen);
        if (adapter?.AttentionPrefix is { Gated: false } prefix && startPos == 0) AttentionPrefixRows.Write(prefix, l, k, v, batch, seqLen);
        var lse = LseView(s, batch, seqLen, c.NHeads);
        if (kCache != null)
            Attention.Forward(q, kCache.RowsView(0, startPos + seqLen), vCache!.RowsView(0, startPos + seqLen), o, lse, 1, seqLen, startPos,
                c.NHeads, c.NKvHeads, c.HeadDim);
        else
            Attention.Forward(q, k, v, o, lse, batch, seqLen, 0, c.NHeads, c.NKvHeads, c.HeadDim);
        var oProjIn = adapter?.AdaptionPrompt?.Forward(layer, l, q, o) ?? o;
        if (inPlace)
        {
            Linear(adapter, l, TargetModule.O, layer.Wo, oProjIn, xIn, layer.Bo, beta: 1);
            xMid = xIn;
        }
        else
        {
            Linear(adapter, l, TargetModule.O, layer.Wo, oProjIn, z, layer.Bo);
            adapter?.AttentionOutput(l, z);
            BasicOps.Add(xIn, z, xMid);
        }

        RmsNorm.Forward(xMid, NormWeight(adapter, l, LlamaTensorKind.FfnNorm, layer.FfnNorm), h2, eps);
        Linear(adapter, l, TargetModule.Gate, layer.Gate, h2, g, layer.BGate);
        Linear(adapter, l, TargetModule.Up, layer.Up, h2, u, layer.BUp);
        SwiGlu.Forward(g, u, sw);
        if (inPlace)
        {
            Linear(adapter, l, TargetModule.Down, layer.Down, sw, xMid, layer.BDown, beta: 1);
            return;
        }
        Linear(adapter, l, TargetModule.Down, layer.Down, sw, z, layer.BDown);
        adapter?.MlpOutput(l, h2, z);
        BasicOps.Add(xMid, z, xOut);
    }

    /// <summary>The [batch, n_heads, seqLen] view of the state's log-sum-exp buffer.</summary>
    public static DeviceTensor LseView(LayerState s, int batch, int seqLen, int nHeads) =>
        batch == s.Batch && seqLen == s.SeqLen ? s.Lse
            : s.Lse.Reshape(s.Lse.Count).RowsView(0, (long)batch * nHeads * seqLen).Reshape(batch, nHeads, seqLen);

    private static void Linear(IAdapterRuntime? adapter, int l, TargetModule t, DeviceLinear w, DeviceTensor x, DeviceTensor y, DeviceTensor? bias, float beta = 0)
    {
        w.Forward(adapter?.LinearInput(l, t, x) ?? x, y, beta: beta);
        if (bias != null) Bias.Add(y, bias);
        adapter?.Linear(l, t, x, y);
    }

    /// <summary>
    /// Backward of <see cref="Forward"/> for the activations in <paramref name="s"/> (the layer's own forward, or its
    /// recomputation with checkpointing) and input <paramref name="xIn"/>: g.DX holds ∂loss/∂(layer output) on entry
    /// and ∂loss/∂(layer input) on return; the adapter's parameter gradients accumulate. No frozen weight gets a gradient.
    /// </summary>
    public static void Backward(DeviceLlama model, int l, LayerState s, DeviceTensor xIn, LayerGradients g, ITrainableAdapter adapter)
    {
        var c = model.Config;
        var layer = model.Layers[l];
        float eps = (float)c.RmsNormEps;
        var lora = adapter;
        int batch = s.Batch, seqLen = s.SeqLen;
        var (_dX, _dH, _dO, _dQ, _dK, _dV, _delta, _dZ, _dHx, _dSwiGlu) = (g.DX, g.DH, g.DO, g.DQ, g.DK, g.DV, g.AttnDelta, g.DZ, g.DHx, g.DSwiGlu);

        // MLP block: x_out = x_mid + adapter(down(silu(gate(h2))·up(h2))).
        var dz = _dX;
        if (_dZ != null)
        {
            BasicOps.Fill(_dHx!, 0);
            lora.MlpOutputBackward(l, s.H2, _dX, _dZ, _dHx!);
            dz = _dZ;
        }
        // ∂loss/∂swiglu overwrites swiglu: the adapter reads it first and writes its input gradient there, then the base adds
        // (a method with an input transform at down reads swiglu after that: it gets a buffer of its own).
        var dS = _dSwiGlu ?? s.S;
        var dDown = lora.LinearOutputBackward(l, TargetModule.Down, dz);
        bool adapterWrote = lora.LinearBackward(l, TargetModule.Down, s.S, dDown, dS, overwriteDx: true);
        BaseInputGrad(adapter, l, TargetModule.Down, layer.Down, s.S, dDown, dS, accumulate: adapterWrote);
        // dgate and dup overwrite gate and up: the layer's backward needs neither afterwards (checkpointing recomputes them).
        var (dG, dU) = (s.G, s.U);
        SwiGlu.Backward(s.G, s.U, dS, dG, dU);
        LinearGrad(adapter, l, TargetModule.Gate, layer.Gate, s.H2, dG, _dH, accumulate: false);
        LinearGrad(adapter, l, TargetModule.Up, layer.Up, s.H2, dU, _dH, accumulate: true);
        if (_dHx != null) BasicOps.Add(_dH, _dHx, _dH);
        NormGrad(adapter, l, LlamaTensorKind.FfnNorm, layer.FfnNorm, s.XMid, _dH, _dX, eps, accumulate: true);

        // Attention block: x_mid = x_in + adapter(o_proj(attention(rope(q(h1)), rope(k(h1)), v(h1)))).
        dz = _dX;
        if (_dZ != null)
        {
            lora.AttentionOutputBackward(l, _dX, _dZ);
            dz = _dZ;
        }
        LinearGrad(adapter, l, TargetModule.O, layer.Wo, s.O, dz, _dO, accumulate: false);
        var lse = LseView(s, batch, seqLen, c.NHeads);
        Attention.Backward(s.Q, s.K, s.V, s.O, lse, _dO, _dQ, _dK, _dV, _delta, batch, seqLen, 0, c.NHeads, c.NKvHeads, c.HeadDim);
        if (adapter.AttentionPrefix is { Gated: false } prefix) AttentionPrefixRows.Backward(prefix, l, _dK, _dV, batch, seqLen);
        adapter.AdaptionPrompt?.Backward(layer, l, s.Q, _dO, _dQ);
        Rope.Apply(_dQ, _dQ, model.InvFreq, c.HeadDim, model.Pairing, 0, seqLen, inverse: true);
        Rope.Apply(_dK, _dK, model.InvFreq, c.HeadDim, model.Pairing, 0, seqLen, inverse: true);
        LinearGrad(adapter, l, TargetModule.Q, layer.Wq, s.H1, _dQ, _dH, accumulate: false);
        LinearGrad(adapter, l, TargetModule.K, layer.Wk, s.H1, _dK, _dH, accumulate: true);
        LinearGrad(adapter, l, TargetModule.V, layer.Wv, s.H1, _dV, _dH, accumulate: true);
        NormGrad(adapter, l, LlamaTensorKind.AttnNorm, layer.AttnNorm, xIn, _dH, _dX, eps, accumulate: true);
    }

    /// <summary>The RMSNorm weight at <paramref name="norm"/>: the base's, or the adapter's tuned one.</summary>
    public static DeviceTensor NormWeight(IAdapterRuntime? adapter, int l, LlamaTensorKind norm, DeviceTensor baseWeight) =>
        adapter?.NormWeight(l, norm, baseWeight) ?? baseWeight;

    /// <summary>dx (+)= ∂loss/∂x of an RMSNorm with input x and output gradient dh: through the adapter's tuned weight (and its gradient), or the base's.</summary>
    public static void NormGrad(ITrainableAdapter adapter, int l, LlamaTensorKind norm, DeviceTensor baseWeight, DeviceTensor x, DeviceTensor dh,
        DeviceTensor dx, float eps, bool accumulate)
    {
        if (!adapter.NormBackward(l, norm, x, dh, dx, eps, accumulate)) RmsNorm.Backward(x, baseWeight, dh, dx, eps, accumulate);
    }

    /// <summary>
    /// dx (+)= ∂loss/∂x of one hooked linear with input x and output gradient dy: the method's non-additive output
    /// transforms first, then the base linear (through the method's input transform, when it has one), then the branch.
    /// </summary>
    private static void LinearGrad(ITrainableAdapter adapter, int l, TargetModule t, DeviceLinear w, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool accumulate)
    {
        dy = adapter.LinearOutputBackward(l, t, dy);
        BaseInputGrad(adapter, l, t, w, x, dy, dx, accumulate);
        adapter.LinearBackward(l, t, x, dy, dx);
    }

    /// <summary>dx (+)= ∂loss/∂x through the base linear w and, when the method has one at t, its input transform.</summary>
    private static void BaseInputGrad(ITrainableAdapter adapter, int l, TargetModule t, DeviceLinear w, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool accumulate)
    {
        if (!adapter.LinearInputBackward(l, t, w, x, dy, dx, accumulate)) w.InputGrad(dy, dx, beta: accumulate ? 1 : 0);
    }
}

/// <summary>
/// The gradient buffers a layer's backward works in, shared by every layer of a training step: dx, dh [rows, dim];
/// do, dq [rows, q_dim]; dk, dv [rows, kv_dim]; the attention delta [batch, n_heads, seqLen]; with block hooks dz and
/// dh_adapter [rows, dim]; with an input transform at down, ∂swiglu [rows, hidden] apart from swiglu.
/// </summary>
public sealed class LayerGradients : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;

    public LayerGradients(VulkanContext ctx, Models.LlamaConfig c, int batch, int seqLen, ITrainableAdapter adapter)
    {
        int rows = batch * seqLen;
        using var scope = new TensorScope();
        DeviceTensor T(string name, params long[] shape) => scope.Add(DeviceTensor.Create(ctx, name, DType.F32, shape, MemoryCategory.Activations));
        DX = T("train.dx", rows, c.Dim);
        DH = T("train.dh", rows, c.Dim);
        DO = T("train.do", rows, c.QDim);
        DQ = T("train.dq", rows, c.QDim);
        DK = T("train.dk", rows, c.KvDim);
        DV = T("train.dv", rows, c.KvDim);
        AttnDelta = T("train.attn_delta", batch, c.NHeads, seqLen);
        if (adapter.TransformsLinearInput(Methods.TargetModule.Down)) DSwiGlu = T("train.d_swiglu", rows, c.HiddenDim);
        if (adapter.HasBlockHooks)
        {
            DZ = T("train.dz", rows, c.Dim);
            DHx = T("train.dh_adapter", rows, c.Dim);
        }
        _owned = scope.Keep();
    }

    public DeviceTensor DX { get; }
    public DeviceTensor DH { get; }
    public DeviceTensor DO { get; }
    public DeviceTensor DQ { get; }
    public DeviceTensor DK { get; }
    public DeviceTensor DV { get; }
    public DeviceTensor AttnDelta { get; }
    public DeviceTensor? DZ { get; }
    public DeviceTensor? DHx { get; }
    public DeviceTensor? DSwiGlu { get; }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
