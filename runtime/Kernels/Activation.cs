// Elementwise activations for adapters (ReLU, SiLU, GELU-tanh, tanh) and their input gradients; split-aware.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// ReLU: max(x, 0), f′ = 1 for x &gt; 0 else 0. SiLU: x·σ(x). GELU: the tanh approximation
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (PyTorch approximate="tanh"), computed as x·σ(2z) with the same value.
/// Tanh: tanh x, f′ = 1 − tanh² x (prefix tuning's projection MLP).
/// </summary>
public enum ActivationKind { Relu, Silu, Gelu, Tanh }

public static class Activation
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, XOffset, OutOffset, DyOffset; }

    /// <summary>y = f(x) elementwise (equal counts). Writes y, which may be x.</summary>
    public static void Forward(ActivationKind kind, DeviceTensor x, DeviceTensor y)
    {
        BasicOps.RequireF32(x, y);
        OpChecks.RequireSameCount(x, y, "activation");
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.ActivationForward, BasicOps.WorkgroupSize, Kind(kind));
        foreach (var piece in Pieces.Split(x.Count, [x, y], [1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new Push { Count = (uint)piece.Count, GroupsX = gx, XOffset = piece.Offsets[0], OutOffset = piece.Offsets[1] },
                gx, gy, 1, "activation_forward");
        }
    }

    /// <summary>dx = dy ⊙ f′(x) elementwise (equal counts). Writes dx, which may be dy (not x).</summary>
    public static void Backward(ActivationKind kind, DeviceTensor x, DeviceTensor dy, DeviceTensor dx)
    {
        BasicOps.RequireF32(x, dy, dx);
        OpChecks.RequireSameCount(x, dy, "activation backward");
        OpChecks.RequireSameCount(x, dx, "activation backward");
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.ActivationBackward, BasicOps.WorkgroupSize, Kind(kind));
        foreach (var piece in Pieces.Split(x.Count, [x, dy, dx], [1, 1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(piece.Ranges[1]), Binding.Write(piece.Ranges[2])],
                new Push { Count = (uint)piece.Count, GroupsX = gx, XOffset = piece.Offsets[0], OutOffset = piece.Offsets[2], DyOffset = piece.Offsets[1] },
                gx, gy, 1, "activation_backward");
        }
    }

    private static uint Kind(ActivationKind kind) => kind switch
    {
        ActivationKind.Relu => 0,
        ActivationKind.Silu => 1,
        ActivationKind.Gelu => 2,
        ActivationKind.Tanh => 3,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown activation"),
    };
}
