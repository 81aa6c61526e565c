// Inverted dropout with a counter-based hash mask: forward and backward are the same call with the same seed; split-aware.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// y[i] = keep(i) ? x[i]·scale : 0 with scale = fp32(1/(1 − p)) and keep(i) ⇔ u(seed, i) ≥ p, where
/// u = (h >> 8)/2²⁴ ∈ [0, 1) and h = pcg(pcg(i) ^ pcg(seed)) on 32-bit words (<see cref="Hash"/>; i is the flat element
/// index, taken mod 2³²). Dropped elements are written as 0 (also when x is Inf or NaN). The mask is a function of
/// (seed, i, p) only, so applying the same call to the gradient with the same seed is the backward pass.
/// </summary>
public static class Dropout
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push { public uint Count, GroupsX, XOffset, YOffset, Base, Key, Threshold; public float Scale; }

    /// <summary>PCG hash of one 32-bit word (Jarzynski &amp; Olano, "Hash Functions for GPU Rendering", JCGT 2020).</summary>
    public static uint Pcg(uint v)
    {
        uint state = unchecked(v * 747796405u + 2891336453u);
        uint word = unchecked(((state >> (int)((state >> 28) + 4u)) ^ state) * 277803737u);
        return (word >> 22) ^ word;
    }

    /// <summary>The 32-bit hash behind element <paramref name="index"/>'s mask: pcg(pcg(index) ^ pcg(seed)).</summary>
    public static uint Hash(uint seed, uint index) => Pcg(Pcg(index) ^ Pcg(seed));

    /// <summary>⌈p·2²⁴⌉: an element is kept when (hash >> 8) ≥ this, i.e. when u = (hash >> 8)/2²⁴ ≥ p.</summary>
    public static uint Threshold(float p)
    {
        CheckP(p);
        return (uint)Math.Ceiling(p * 16777216.0);
    }

    /// <summary>The fp32 scale of kept elements: 1/(1 − p) rounded once to fp32 (1 when p = 0; 0 when p = 1).</summary>
    public static float Scale(float p)
    {
        CheckP(p);
        return p >= 1 ? 0f : (float)(1.0 / (1.0 - p));
    }

    /// <summary>y = x ⊙ mask/(1 − p), 0 ≤ p ≤ 1 (p = 0 copies x exactly; p = 1 writes zeros). Writes y, which may be x.</summary>
    public static void Apply(DeviceTensor x, DeviceTensor y, float p, uint seed)
    {
        BasicOps.RequireF32(x, y);
        OpChecks.RequireSameCount(x, y, "dropout");
        uint threshold = Threshold(p), key = Pcg(seed);
        float scale = Scale(p);
        if (p == 0)
        {
            // Every element is kept with scale 1: a plain copy is bit-exact even where a device flushes denormals.
            BasicOps.Copy(x, y);
            return;
        }
        var ctx = x.Context;
        var pipeline = ctx.Pipelines.Get(ShaderId.Dropout, BasicOps.WorkgroupSize);
        foreach (var piece in Pieces.Split(x.Count, [x, y], [1, 1]))
        {
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(piece.Count));
            ctx.Commands.Dispatch(pipeline, [Binding.Read(piece.Ranges[0]), Binding.Write(piece.Ranges[1])],
                new Push
                {
                    Count = (uint)piece.Count, GroupsX = gx, XOffset = piece.Offsets[0], YOffset = piece.Offsets[1],
                    Base = unchecked((uint)piece.Start), Key = key, Threshold = threshold, Scale = scale,
                }, gx, gy, 1, "dropout");
        }
    }

    private static void CheckP(float p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must lie in [0, 1]");
    }
}
