// One decoder layer's forward on the device into a LayerState: pre-norm attention with RoPE and grouped-query heads,
// then the SwiGLU MLP, each added to the residual stream, with adapter hooks after every base linear and block.
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public static class LayerForward
{
    /// <summary>
    /// x_out = layer(x_in) for <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens at positions
    /// startPos…; with <paramref name="kCache"/>/<paramref name="vCache"/> (batch 1) keys and values are appended to
    /// the cache and attention reads it. x_out may be x_in.
    /// </summary>
    public static void Run(DeviceLlama model, int l, LayerState s, DeviceTensor xIn, DeviceTensor xOut, int batch, int seqLen, int startPos,
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
        bool inPlace = ReferenceEquals(xIn, xOut) && adapter is not ITrainableAdapter { HasBlockHooks: true };

        RmsNorm.Forward(xIn, layer.AttnNorm, h1, eps);
        Linear(adapter, l, TargetModule.Q, layer.Wq, h1, q, layer.Bq);
        Linear(adapter, l, TargetModule.K, layer.Wk, h1, k, layer.Bk);
        Linear(adapter, l, TargetModule.V, layer.Wv, h1, v, layer.Bv);
        Rope.Apply(q, q, model.InvFreq, c.HeadDim, model.Pairing, startPos, seqLen);
        Rope.Apply(k, k, model.InvFreq, c.HeadDim, model.Pairing, startPos, seqLen);
        var lse = LseView(s, batch, seqLen, c.NHeads);
        if (kCache != null)
            Attention.Forward(q, kCache.RowsView(0, startPos + seqLen), vCache!.RowsView(0, startPos + seqLen), o, lse, 1, seqLen, startPos,
                c.NHeads, c.NKvHeads, c.HeadDim);
        else
            Attention.Forward(q, k, v, o, lse, batch, seqLen, 0, c.NHeads, c.NKvHeads, c.HeadDim);
        if (inPlace)
        {
            Linear(adapter, l, TargetModule.O, layer.Wo, o, xIn, null, beta: 1);
            xMid = xIn;
        }
        else
        {
            Linear(adapter, l, TargetModule.O, layer.Wo, o, z, null);
            adapter?.AttentionOutput(l, z);
            BasicOps.Add(xIn, z, xMid);
        }

        RmsNorm.Forward(xMid, layer.FfnNorm, h2, eps);
        Linear(adapter, l, TargetModule.Gate, layer.Gate, h2, g, null);
        Linear(adapter, l, TargetModule.Up, layer.Up, h2, u, null);
        SwiGlu.Forward(g, u, sw);
        if (inPlace)
        {
            Linear(adapter, l, TargetModule.Down, layer.Down, sw, xMid, null, beta: 1);
            return;
        }
        Linear(adapter, l, TargetModule.Down, layer.Down, sw, z, null);
        adapter?.MlpOutput(l, h2, z);
        BasicOps.Add(xMid, z, xOut);
    }

    /// <summary>The [batch, n_heads, seqLen] view of the state's log-sum-exp buffer.</summary>
    public static DeviceTensor LseView(LayerState s, int batch, int seqLen, int nHeads) =>
        batch == s.Batch && seqLen == s.SeqLen ? s.Lse
            : s.Lse.Reshape(s.Lse.Count).RowsView(0, (long)batch * nHeads * seqLen).Reshape(batch, nHeads, seqLen);

    private static void Linear(IAdapterRuntime? adapter, int l, TargetModule t, DeviceLinear w, DeviceTensor x, DeviceTensor y, DeviceTensor? bias, float beta = 0)
    {
        w.Forward(x, y, beta: beta);
        if (bias != null) Bias.Add(y, bias);
        adapter?.Linear(l, t, x, y);
    }
}
