// Rotary position embedding on q or k rows [T, heads·head_dim], both pair layouts, forward and backward (rotation by −θ).
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>Which elements of a head form a rotated pair.</summary>
public enum RopePairing
{
    /// <summary>(2i, 2i+1): llama2.c, Meta checkpoints, GGUF.</summary>
    Interleaved,
    /// <summary>(i, i + head_dim/2): HF transformers' rotate_half.</summary>
    RotateHalf,
}

public static class Rope
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint Tokens, RowElems, HalfHd, GroupsX, StartPos, SeqLen, TStart;
        public float Sign;
        public uint XOffset, YOffset, FOffset;
    }

    /// <summary>
    /// y[t, pair] = rotation of x[t, pair] by θ = pos·invFreq[i] (by −θ when <paramref name="inverse"/>, the backward
    /// pass), pos = startPos + (t mod seqLen) (seqLen 0: pos = startPos + t). x and y are [T, heads·headDim] (any shape
    /// whose rows hold whole heads); invFreq is [headDim/2] F32, with any rope scaling already applied by the host.
    /// Writes y; y may be x (in place).
    /// </summary>
    public static void Apply(DeviceTensor x, DeviceTensor y, DeviceTensor invFreq, int headDim, RopePairing pairing,
                             long startPos = 0, long seqLen = 0, bool inverse = false)
    {
        BasicOps.RequireF32(x, y, invFreq);
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentException($"rope: head dimension {headDim} must be even and positive");
        long rowElems = x.RowElements;
        if (rowElems % headDim != 0) throw new ArgumentException($"rope: rows of '{x.Name}' {x.ShapeString} do not hold whole heads of {headDim}");
        OpChecks.RequireCount(invFreq, headDim / 2, "rope inverse frequencies");
        if (startPos < 0 || seqLen < 0) throw new ArgumentException("rope: start position and sequence length must not be negative");
        long tokens = x.Rows;
        long maxPos = startPos + (seqLen > 0 ? Math.Min(seqLen, tokens) : tokens);
        if (maxPos > 1 << 24) throw new ArgumentException($"rope: positions up to {maxPos} are not exact in fp32");
        if (tokens == 0 || rowElems == 0) return;
        var ctx = x.Context;
        var p = ctx.Pipelines.Get(ShaderId.Rope, BasicOps.WorkgroupSize, pairing == RopePairing.RotateHalf ? 1u : 0u);
        var (fRange, fOffset) = OpChecks.Whole(invFreq);
        foreach (var piece in Pieces.Split(tokens, [x, y], [rowElems, rowElems]))
        {
            long pairs = piece.Count * rowElems / 2;
            if (pairs > uint.MaxValue) throw new ArgumentException("rope: too many pairs for one dispatch");
            var (gx, gy) = OpChecks.Grid(ctx, BasicOps.Groups(pairs));
            ctx.Commands.Dispatch(p, [Binding.Read(piece.Ranges[0]), Binding.Read(fRange), Binding.Write(piece.Ranges[1])],
                new Push
                {
                    Tokens = (uint)piece.Count, RowElems = (uint)rowElems, HalfHd = (uint)(headDim / 2), GroupsX = gx,
                    StartPos = (uint)startPos, SeqLen = (uint)seqLen, TStart = (uint)piece.Start, Sign = inverse ? -1f : 1f,
                    XOffset = piece.Offsets[0], YOffset = piece.Offsets[1], FOffset = fOffset,
                }, gx, gy, 1, "rope");
        }
    }
}
