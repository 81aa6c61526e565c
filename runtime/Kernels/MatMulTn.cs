// fp32 C[N1,N2] = alpha·Aᵀ·B + beta·C with A [M,N1], B [M,N2]: the weight-gradient product of LoRA-style adapters.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// C = alpha·Aᵀ·B + beta·C summed over the M rows (tokens) of A and B, e.g. dB_lora = s·dYᵀ·T and dA_lora = s·dTᵀ·X.
/// Each output is one fp32 fma chain over the rows in order, in dispatches of at most <see cref="ChunkRows"/> rows
/// accumulated with beta = 1: deterministic, no atomics. A and B may span several bindings (by rows, summed piece by
/// piece in row order); C must fit one.
/// </summary>
public static class MatMulTn
{
    /// <summary>Rows of A and B summed per dispatch (bounds the length of any single dispatch).</summary>
    public const int ChunkRows = 8192;
    /// <summary>Output tile of the lanes shader: 8 rows x 64 columns of C (as computed; see the orientation choice).</summary>
    public const uint LanesTileRows = 8, LanesTileCols = 64;

    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint R, N, K, Ldp, Ldq, LdcR, LdcC, POffset, QOffset, COffset;
        public float Alpha, Beta;
    }

    /// <summary>C[N1,N2] = alpha·Aᵀ·B + beta·C; A is [M,N1], B is [M,N2] (last dimension = columns). C is not read when beta = 0.</summary>
    public static void Run(DeviceTensor a, DeviceTensor b, DeviceTensor c, float alpha = 1, float beta = 0) =>
        Run(a, b, c, alpha, beta, MatMulAlgorithm.Auto);

    /// <summary>As <see cref="Run(DeviceTensor, DeviceTensor, DeviceTensor, float, float)"/> with a chosen shader.</summary>
    /// <param name="splitK">slices of the summed rows on the shared-tiles path, each summed into its own partial and the
    /// partials added in order (0: <see cref="SplitK.Choose"/> decides, for operands in one binding each; 1: none)</param>
    public static void Run(DeviceTensor a, DeviceTensor b, DeviceTensor c, float alpha, float beta, MatMulAlgorithm algorithm, int splitK = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(splitK);
        BasicOps.RequireF32(a, b, c);
        long n1 = Cols(a), n2 = Cols(b);
        long m = n1 == 0 ? 0 : a.Count / n1, mb = n2 == 0 ? 0 : b.Count / n2;
        if (n1 > 0 && n2 > 0 && m != mb)
            throw new ArgumentException($"MatMulTn: A '{a.Name}' {a.ShapeString} and B '{b.Name}' {b.ShapeString} disagree on the summed rows M ({m} vs {mb})");
        if (c.Count != n1 * n2 || (c.Shape.Length > 0 && c.Shape[^1] != n2 && c.Count > 0))
            throw new ArgumentException($"MatMulTn: C '{c.Name}' {c.ShapeString} should be [{n1}, {n2}] (Aᵀ·B of A {a.ShapeString}, B {b.ShapeString})");
        if (c.Count == 0) return;
        var ctx = a.Context;
        if (m == 0)
        {
            // Empty sum: C = beta·C (and C is not read when beta = 0).
            if (beta == 0) BasicOps.Fill(c, 0);
            else BasicOps.Scale(c, c, beta);
            return;
        }
        if (algorithm == MatMulAlgorithm.Auto) algorithm = MatMul.Choose(ctx);
        if (algorithm == MatMulAlgorithm.Lanes && !MatMul.LanesSupported(ctx))
            throw new ArgumentException("MatMulTn: the lanes algorithm needs 8-lane subgroups with broadcast");
        bool lanes = algorithm == MatMulAlgorithm.Lanes;
        if (lanes && splitK > 1) throw new ArgumentException("MatMulTn: split-K runs on the shared-tiles algorithm");
        var (cRange, cOffset) = WholeBinding(c, "C");

        // Shared tiles: matmul.comp's TRANS_A variant with the device's square tile from the table (C' = C, stored as is).
        var tiles = lanes ? null : MatMulTiles.For(ctx.Caps, fp16B: false);
        uint tileR = tiles?.BM ?? LanesTileRows, tileC = tiles?.BN ?? LanesTileCols;
        // The kernel computes C' = Pᵀ·Q into tiles of tileR x tileC. On the lanes shader take P = B, Q = A and store C'
        // transposed when that pads less (e.g. dB_lora = dYᵀ·T with thousands of rows but a rank-sized N2 on the 8 x 64
        // tile); matmul.comp stores C as is.
        bool swap = lanes && Padded(n2, tileR) * Padded(n1, tileC) < Padded(n1, tileR) * Padded(n2, tileC);
        long rCount = swap ? n2 : n1, nCount = swap ? n1 : n2;
        uint ldcR = (uint)(swap ? 1 : n2), ldcC = (uint)(swap ? n2 : 1);

        uint maxX = ctx.Caps.MaxComputeWorkGroupCount[0], maxY = ctx.Caps.MaxComputeWorkGroupCount[1];
        uint gx = (uint)((nCount + tileC - 1) / tileC);
        if (gx > maxX) throw new ArgumentException($"MatMulTn: {nCount} output columns need {gx} workgroups, over the device limit {maxX}");
        var pipeline = tiles == null ? ctx.Pipelines.Get(ShaderId.MatmulTnLanes) : ctx.Pipelines.Get(ShaderId.MatmulTn, tiles.Spec(transposeB: false, vecA: false));
        var pieces = Pieces.Split(m, [a.Reshape(m, n1), b.Reshape(m, n2)], [n1, n2]);
        if (!lanes && pieces.Count == 1 && m > 1)
        {
            long groups = gx * ((rCount + tileR - 1) / tileR);
            int splits = splitK > 0 ? (int)Math.Min(splitK, m) : SplitK.Choose(groups, m, n1 * n2);
            if (splits > 1 && (m + splits - 1) / splits <= ChunkRows)
            {
                // Each slice of rows into its own partial (C's layout), then the partials added in slice order.
                long slice = (m + splits - 1) / splits;
                splits = (int)((m + slice - 1) / slice);
                long stride = SplitK.PartialStride(ctx, n1 * n2);
                var piece = pieces[0];
                var (pRange, pOffset, ldp) = swap ? (piece.Ranges[1], piece.Offsets[1], (uint)n2) : (piece.Ranges[0], piece.Offsets[0], (uint)n1);
                var (qRange, qOffset, ldq) = swap ? (piece.Ranges[0], piece.Offsets[0], (uint)n1) : (piece.Ranges[1], piece.Offsets[1], (uint)n2);
                for (int s = 0; s < splits; s++)
                {
                    long k0 = s * slice, kCount = Math.Min(slice, m - k0);
                    var partial = SplitK.Partial(ctx, splits, stride, s);
                    for (long r0 = 0; r0 < rCount; r0 += (long)maxY * tileR)
                    {
                        long rows = Math.Min(rCount - r0, (long)maxY * tileR);
                        var push = new MatMul.MatPush
                        {
                            M = (uint)rows, N = (uint)nCount, K = (uint)kCount, Lda = ldp, Ldb = ldq, Ldc = ldcR,
                            AOffset = pOffset + (uint)(k0 * ldp + r0), BOffset = qOffset + (uint)(k0 * ldq), COffset = (uint)(r0 * ldcR),
                            Alpha = 1, Beta = 0,
                        };
                        ctx.Commands.Dispatch(pipeline, [Binding.Read(pRange), Binding.Read(qRange), Binding.Write(partial)],
                            push, gx, (uint)((rows + tileR - 1) / tileR), 1, "matmul_tn.splitk");
                    }
                }
                SplitK.Sum(ctx, splits, stride, n1 * n2, cRange, cOffset, alpha, beta);
                return;
            }
        }
        bool first = true;
        foreach (var piece in pieces)
        {
            var (aRange, aOffset, bRange, bOffset) = (piece.Ranges[0], piece.Offsets[0], piece.Ranges[1], piece.Offsets[1]);
            var (pRange, pOffset, ldp) = swap ? (bRange, bOffset, (uint)n2) : (aRange, aOffset, (uint)n1);
            var (qRange, qOffset, ldq) = swap ? (aRange, aOffset, (uint)n1) : (bRange, bOffset, (uint)n2);
            for (long k0 = 0; k0 < piece.Count; k0 += ChunkRows)
            {
                long kCount = Math.Min(ChunkRows, piece.Count - k0);
                float chunkBeta = first ? beta : 1f;
                first = false;
                for (long r0 = 0; r0 < rCount; r0 += (long)maxY * tileR)
                {
                    long rows = Math.Min(rCount - r0, (long)maxY * tileR);
                    uint gy = (uint)((rows + tileR - 1) / tileR);
                    Binding[] bindings = [Binding.Read(pRange), Binding.Read(qRange), chunkBeta != 0 ? Binding.ReadWrite(cRange) : Binding.Write(cRange)];
                    uint pOff = pOffset + (uint)(k0 * ldp + r0), qOff = qOffset + (uint)(k0 * ldq), cOff = cOffset + (uint)(r0 * ldcR);
                    if (lanes)
                        ctx.Commands.Dispatch(pipeline, bindings, new Push
                        {
                            R = (uint)rows, N = (uint)nCount, K = (uint)kCount, Ldp = ldp, Ldq = ldq, LdcR = ldcR, LdcC = ldcC,
                            POffset = pOff, QOffset = qOff, COffset = cOff, Alpha = alpha, Beta = chunkBeta,
                        }, gx, gy, 1, "matmul_tn");
                    else
                        ctx.Commands.Dispatch(pipeline, bindings, new MatMul.MatPush
                        {
                            M = (uint)rows, N = (uint)nCount, K = (uint)kCount, Lda = ldp, Ldb = ldq, Ldc = ldcR,
                            AOffset = pOff, BOffset = qOff, COffset = cOff, Alpha = alpha, Beta = chunkBeta,
                        }, gx, gy, 1, "matmul_tn");
                }
            }
        }
    }

    private static long Cols(DeviceTensor t) => t.Shape.Length == 0 ? 1 : t.Shape[^1];

    private static long Padded(long n, uint tile) => (n + tile - 1) / tile * tile;

    private static (BufferRange Range, uint Offset) WholeBinding(DeviceTensor t, string role)
    {
        if (t.Segments.Count != 1)
            throw new ArgumentException($"MatMulTn: {role} '{t.Name}' {t.ShapeString} is split over {t.Segments.Count} bindings; it must fit one binding ({t.Context.Caps.MaxBindingBytes} bytes)");
        return OpChecks.Whole(t);
    }
}
