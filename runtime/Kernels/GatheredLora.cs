// The LoRA branch of a mixed-adapter batch (S-LoRA's gathered shrink/expand): every row indexes its own adapter's A and
// B in pools padded to one rank, so one pair of dispatches serves all adapters of a step; rows without one are skipped.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// y[m,:] += scale[m]·(x[m,:]·A[a_m]ᵀ)·B[a_m]ᵀ per row m with adapter a_m ≥ 0 (a_m &lt; 0: row untouched), each row
/// with its own scale (its adapter's LoRA scaling times its request's). Pools: A [S, R, K], B [S, N, R]; scale [M];
/// an adapter of a smaller rank pads its A rows and B columns with zeros.
/// Every operand must lie in one binding (pools and batches of a serving step do).
/// </summary>
public static class GatheredLora
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, Rank, Cols, InOffset, WOffset, RowsOffset, ScaleOffset, OutOffset; }

    /// <summary>t [M, R] = per-row x·A[a_m]ᵀ (zero for rows without an adapter). x [M, K], aPool [S, R, K], rowAdapter [M] int32.</summary>
    public static void Shrink(DeviceTensor x, DeviceTensor aPool, DeviceTensor rowAdapter, DeviceTensor t)
    {
        BasicOps.RequireF32(x, aPool, t);
        OpChecks.RequireI32(rowAdapter);
        if (aPool.Shape.Length != 3) throw new ArgumentException($"gathered LoRA: the A pool '{aPool.Name}' {aPool.ShapeString} should be [adapters, rank, in]");
        long rows = rowAdapter.Count, rank = aPool.Shape[1], k = aPool.Shape[2];
        OpChecks.RequireCount(x, rows * k, "gathered LoRA shrink (x [rows, in])");
        OpChecks.RequireCount(t, rows * rank, "gathered LoRA shrink (t [rows, rank])");
        Dispatch(ShaderId.LoraGatheredShrink, [x, aPool, rowAdapter, t], null, rows * rank, rank, k, Binding.Write, "lora_gathered_shrink");
    }

    /// <summary>y [M, N] += per-row scale[m]·t·B[a_m]ᵀ (rows without an adapter untouched). t [M, R], bPool [S, N, R], scale [M].</summary>
    public static void Expand(DeviceTensor t, DeviceTensor bPool, DeviceTensor scale, DeviceTensor rowAdapter, DeviceTensor y)
    {
        BasicOps.RequireF32(t, bPool, scale, y);
        OpChecks.RequireI32(rowAdapter);
        if (bPool.Shape.Length != 3) throw new ArgumentException($"gathered LoRA: the B pool '{bPool.Name}' {bPool.ShapeString} should be [adapters, out, rank]");
        long rows = rowAdapter.Count, n = bPool.Shape[1], rank = bPool.Shape[2];
        OpChecks.RequireCount(t, rows * rank, "gathered LoRA expand (t [rows, rank])");
        OpChecks.RequireCount(y, rows * n, "gathered LoRA expand (y [rows, out])");
        OpChecks.RequireCount(scale, rows, "gathered LoRA expand (scale [rows])");
        Dispatch(ShaderId.LoraGatheredExpand, [t, bPool, rowAdapter, scale, y], scale, rows * n, rank, n, Binding.ReadWrite, "lora_gathered_expand");
    }

    private static void Dispatch(ShaderId id, DeviceTensor[] operands, DeviceTensor? scale, long count, long rank, long cols,
        Func<VkPeft.Runtime.Memory.BufferRange, Binding> outBinding, string label)
    {
        if (count == 0) return;
        if (count > uint.MaxValue) throw new ArgumentException($"{label}: {count} outputs exceed one dispatch");
        var ctx = operands[0].Context;
        var p = ctx.Pipelines.Get(id, BasicOps.WorkgroupSize);
        var whole = operands.Select(OpChecks.Whole).ToArray();
        var bindings = new Binding[operands.Length];
        for (int i = 0; i < operands.Length - 1; i++) bindings[i] = Binding.Read(whole[i].Range);
        bindings[^1] = outBinding(whole[^1].Range);
        var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(count));
        ctx.Commands.Dispatch(p, bindings, new Push
        {
            Count = (uint)count, GroupsX = gx, Rank = (uint)rank, Cols = (uint)cols,
            InOffset = whole[0].Offset, WOffset = whole[1].Offset, RowsOffset = whole[2].Offset,
            ScaleOffset = scale == null ? 0 : whole[3].Offset, OutOffset = whole[^1].Offset,
        }, gx, gy, 1, label);
    }
}
