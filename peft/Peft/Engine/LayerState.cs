// The activations of one decoder layer for a batch: what its forward writes and its backward reads. Inference keeps one
// set; training keeps one per layer, or one shared set refilled by recomputation (gradient checkpointing).
using VkPeft.Peft.Models;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public sealed class LayerState : IDisposable
{
    private readonly IReadOnlyList<IDisposable> _owned;

    public LayerState(VulkanContext ctx, LlamaConfig c, int batch, int seqLen, string prefix)
    {
        Batch = batch;
        SeqLen = seqLen;
        int rows = batch * seqLen;
        using var scope = new TensorScope();
        DeviceTensor T(string name, params long[] shape) =>
            scope.Add(DeviceTensor.Create(ctx, $"{prefix}.{name}", DType.F32, shape, MemoryCategory.Activations));
        H1 = T("h1", rows, c.Dim);
        Q = T("q", rows, c.QDim);
        K = T("k", rows, c.KvDim);
        V = T("v", rows, c.KvDim);
        O = T("o", rows, c.QDim);
        Lse = T("lse", batch, c.NHeads, seqLen);
        XMid = T("x_mid", rows, c.Dim);
        H2 = T("h2", rows, c.Dim);
        G = T("gate", rows, c.HiddenDim);
        U = T("up", rows, c.HiddenDim);
        S = T("swiglu", rows, c.HiddenDim);
        Z = T("z", rows, c.Dim);
        _owned = scope.Keep();
    }

    public int Batch { get; }
    public int SeqLen { get; }
    public DeviceTensor H1 { get; }    // [rows, dim] RMSNorm(x_in)
    public DeviceTensor Q { get; }     // [rows, n_heads·hd] after RoPE
    public DeviceTensor K { get; }     // [rows, n_kv·hd] after RoPE
    public DeviceTensor V { get; }     // [rows, n_kv·hd]
    public DeviceTensor O { get; }     // [rows, n_heads·hd] attention output
    public DeviceTensor Lse { get; }   // [batch, n_heads, seq] log-sum-exp of attention scores
    public DeviceTensor XMid { get; }  // [rows, dim] x_in + attention block
    public DeviceTensor H2 { get; }    // [rows, dim] RMSNorm(x_mid)
    public DeviceTensor G { get; }     // [rows, hidden] gate projection
    public DeviceTensor U { get; }     // [rows, hidden] up projection
    public DeviceTensor S { get; }     // [rows, hidden] silu(gate)·up
    public DeviceTensor Z { get; }     // [rows, dim] block output before the residual add (scratch)

    /// <summary>Views of the first <paramref name="rows"/> rows (a smaller batch or sequence than allocated).</summary>
    public static DeviceTensor Rows(DeviceTensor t, long rows) => t.Rows == rows ? t : t.RowsView(0, rows);

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
