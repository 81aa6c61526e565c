// SwiGLU activation of the Llama MLP: h = silu(gate) ⊙ up, and its gradients; elementwise, split-aware.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

public static class SwiGlu
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, GOffset, UOffset, HOffset, DgOffset, DuOffset; }

    /// <summary>h = silu(gate) ⊙ up, silu(g) = g·σ(g); all [T, hidden] (equal counts). Writes h (may be gate or up).</summary>
    public static void Forward(DeviceTensor gate, DeviceTensor up, DeviceTensor h)
    {
        BasicOps.RequireF32(gate, up, h);
        OpChecks.RequireSameCount(gate, up, "swiglu");
        OpChecks.RequireSameCount(gate, h, "swiglu");
        var ctx = gate.Context;
        var p = ctx.Pipelines.Get(ShaderId.SwigluForward, BasicOps.WorkgroupSize);
        foreach (var piece in Pieces.Split(gate.Count, [gate, up, h], [1, 1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Write(piece.Ranges[2])],
                new Push { Count = (uint)piece.Count, GroupsX = gx, GOffset = piece.Offsets[0], UOffset = piece.Offsets[1], HOffset = piece.Offsets[2] },
                gx, gy, 1, "swiglu_forward");
        }
    }

    /// <summary>
    /// dGate = dh·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dh·silu(g). Writes dGate and dUp, which may be gate and up (overwriting
    /// the saved activations) but must not be dh or each other.
    /// </summary>
    public static void Backward(DeviceTensor gate, DeviceTensor up, DeviceTensor dh, DeviceTensor dGate, DeviceTensor dUp)
    {
        BasicOps.RequireF32(gate, up, dh, dGate, dUp);
        foreach (var t in new[] { up, dh, dGate, dUp }) OpChecks.RequireSameCount(gate, t, "swiglu backward");
        var ctx = gate.Context;
        var p = ctx.Pipelines.Get(ShaderId.SwigluBackward, BasicOps.WorkgroupSize);
        foreach (var piece in Pieces.Split(gate.Count, [gate, up, dh, dGate, dUp], [1, 1, 1, 1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(p,
                [Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Read(piece.Ranges[2]), Binding.Write(piece.Ranges[3]), Binding.Write(piece.Ranges[4])],
                new Push
                {
                    Count = (uint)piece.Count, GroupsX = gx, GOffset = piece.Offsets[0], UOffset = piece.Offsets[1], HOffset = piece.Offsets[2],
                    DgOffset = piece.Offsets[3], DuOffset = piece.Offsets[4],
                }, gx, gy, 1, "swiglu_backward");
        }
    }
}
