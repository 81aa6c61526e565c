// Causal grouped-query attention on the device: forward (o and the row log-sum-exp) and backward (dq, dk, dv), both
// streaming over keys without a [T, S] buffer. Queries spanning several bindings run in row chunks, each against the
// keys it sees. Shaders: attention_fwd, attention_bwd_dq, attention_bwd_dkv and their flash versions (attention_flash_*).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// Which attention shaders run: <see cref="Direct"/> reads key/query blocks straight from the buffers at
/// workgroup-uniform addresses (8-invocation workgroups; CPU devices such as lavapipe serve these as broadcast loads),
/// <see cref="Shared"/> stages them in shared memory (64-invocation workgroups, one row per invocation),
/// <see cref="Flash"/> is FlashAttention-2 style (a workgroup owns 16 rows, four invocations per row split the head
/// dimension, keys/queries stream through shared memory as tiles; GPUs), <see cref="FlashCoopMatrix"/> is Flash with
/// its block products as NV cooperative matrices (fp16 operands, fp32 accumulation). Auto picks per device kind from
/// measurements, and turns Flash into FlashCoopMatrix where <see cref="Attention.CoopMatrix"/> may run (the device offers
/// it, kernels are not forced safe, and it passed its first-use self-check); an explicit Flash is the fp32 kernel.
/// </summary>
public enum AttentionAlgorithm { Auto, Direct, Shared, Flash, FlashCoopMatrix }

public static class Attention
{
    /// <summary>The array sizes the shaders are compiled for; a head dimension uses the smallest that holds it.</summary>
    public static IReadOnlyList<int> HeadDims => HeadDimList;
    private static readonly int[] HeadDimList = [8, 16, 32, 48, 64, 96, 128];
    public const int MaxHeadDim = 128;
    public const uint DirectWorkgroupSize = 8, SharedWorkgroupSize = 64;

    private static readonly ShaderId[,] Shaders =
    {
        { ShaderId.AttentionFwdD8, ShaderId.AttentionFwdD16, ShaderId.AttentionFwdD32, ShaderId.AttentionFwdD48, ShaderId.AttentionFwdD64, ShaderId.AttentionFwdD96, ShaderId.AttentionFwdD128 },
        { ShaderId.AttentionFwdSharedD8, ShaderId.AttentionFwdSharedD16, ShaderId.AttentionFwdSharedD32, ShaderId.AttentionFwdSharedD48, ShaderId.AttentionFwdSharedD64, ShaderId.AttentionFwdSharedD96, ShaderId.AttentionFwdSharedD128 },
        { ShaderId.AttentionBwdDqD8, ShaderId.AttentionBwdDqD16, ShaderId.AttentionBwdDqD32, ShaderId.AttentionBwdDqD48, ShaderId.AttentionBwdDqD64, ShaderId.AttentionBwdDqD96, ShaderId.AttentionBwdDqD128 },
        { ShaderId.AttentionBwdDqSharedD8, ShaderId.AttentionBwdDqSharedD16, ShaderId.AttentionBwdDqSharedD32, ShaderId.AttentionBwdDqSharedD48, ShaderId.AttentionBwdDqSharedD64, ShaderId.AttentionBwdDqSharedD96, ShaderId.AttentionBwdDqSharedD128 },
        { ShaderId.AttentionBwdDkvD8, ShaderId.AttentionBwdDkvD16, ShaderId.AttentionBwdDkvD32, ShaderId.AttentionBwdDkvD48, ShaderId.AttentionBwdDkvD64, ShaderId.AttentionBwdDkvD96, ShaderId.AttentionBwdDkvD128 },
        { ShaderId.AttentionBwdDkvSharedD8, ShaderId.AttentionBwdDkvSharedD16, ShaderId.AttentionBwdDkvSharedD32, ShaderId.AttentionBwdDkvSharedD48, ShaderId.AttentionBwdDkvSharedD64, ShaderId.AttentionBwdDkvSharedD96, ShaderId.AttentionBwdDkvSharedD128 },
    };

    /// <summary>Head dimensions the flash shaders are compiled for (compile-time sizes; smaller ones are zero-padded).</summary>
    public static IReadOnlyList<int> FlashHeadDims => FlashHeadDimList;
    private static readonly int[] FlashHeadDimList = [8, 16, 32, 48, 64, 80, 96, 128];
    /// <summary>Rows (queries; keys for dk/dv) one flash workgroup owns, and its invocations (attention_flash.glsl).</summary>
    public const uint FlashRows = 16, FlashWorkgroupSize = 64;

    private static readonly ShaderId[,] FlashShaders =
    {
        { ShaderId.AttentionFlashFwdD8, ShaderId.AttentionFlashFwdD16, ShaderId.AttentionFlashFwdD32, ShaderId.AttentionFlashFwdD48, ShaderId.AttentionFlashFwdD64, ShaderId.AttentionFlashFwdD80, ShaderId.AttentionFlashFwdD96, ShaderId.AttentionFlashFwdD128 },
        { ShaderId.AttentionFlashBwdDqD8, ShaderId.AttentionFlashBwdDqD16, ShaderId.AttentionFlashBwdDqD32, ShaderId.AttentionFlashBwdDqD48, ShaderId.AttentionFlashBwdDqD64, ShaderId.AttentionFlashBwdDqD80, ShaderId.AttentionFlashBwdDqD96, ShaderId.AttentionFlashBwdDqD128 },
        { ShaderId.AttentionFlashBwdDkvD8, ShaderId.AttentionFlashBwdDkvD16, ShaderId.AttentionFlashBwdDkvD32, ShaderId.AttentionFlashBwdDkvD48, ShaderId.AttentionFlashBwdDkvD64, ShaderId.AttentionFlashBwdDkvD80, ShaderId.AttentionFlashBwdDkvD96, ShaderId.AttentionFlashBwdDkvD128 },
    };

    /// <summary>Head dimensions the cooperative-matrix flash shaders are compiled for (multiples of 16; smaller ones zero-padded).</summary>
    public static IReadOnlyList<int> CoopMatrixHeadDims => CoopMatrixHeadDimList;
    private static readonly int[] CoopMatrixHeadDimList = [16, 32, 48, 64, 80, 96, 128];

    private static readonly ShaderId[,] CoopMatrixShaders =
    {
        { ShaderId.AttentionFlashCoopmatFwdD16, ShaderId.AttentionFlashCoopmatFwdD32, ShaderId.AttentionFlashCoopmatFwdD48, ShaderId.AttentionFlashCoopmatFwdD64, ShaderId.AttentionFlashCoopmatFwdD80, ShaderId.AttentionFlashCoopmatFwdD96, ShaderId.AttentionFlashCoopmatFwdD128 },
        { ShaderId.AttentionFlashCoopmatBwdDqD16, ShaderId.AttentionFlashCoopmatBwdDqD32, ShaderId.AttentionFlashCoopmatBwdDqD48, ShaderId.AttentionFlashCoopmatBwdDqD64, ShaderId.AttentionFlashCoopmatBwdDqD80, ShaderId.AttentionFlashCoopmatBwdDqD96, ShaderId.AttentionFlashCoopmatBwdDqD128 },
        { ShaderId.AttentionFlashCoopmatBwdDkvD16, ShaderId.AttentionFlashCoopmatBwdDkvD32, ShaderId.AttentionFlashCoopmatBwdDkvD48, ShaderId.AttentionFlashCoopmatBwdDkvD64, ShaderId.AttentionFlashCoopmatBwdDkvD80, ShaderId.AttentionFlashCoopmatBwdDkvD96, ShaderId.AttentionFlashCoopmatBwdDkvD128 },
    };

    /// <summary>
    /// Shared memory of the largest cooperative-matrix flash variant (dk/dv at head dimension 128: the key and value rows
    /// and a 16-query block of q and dO as hi/lo fp16 pairs, 2·2·(16+16)·136·2 bytes; score, dP, P and dS tiles; the
    /// fp32 16x132 block product; lse, D and the block maxima); AttentionCoopMatrixTests reads it back from the SPIR-V.
    /// </summary>
    public const uint CoopMatrixSharedBytes = 47_520;

    /// <summary>
    /// NVIDIA cooperative matrices in the flash kernels (Q·Kᵀ, dO·Vᵀ, P·V, dS·K, Pᵀ·dO, dSᵀ·Q as 16x16x16 fp16 x fp16 ->
    /// fp32 subgroup matrices; softmax, log-sum-exp and accumulators fp32): used by Auto where the device lists the shape,
    /// after its first use agreed with the fp32 flash kernel (forward and backward, including large scores and tiny dO).
    /// </summary>
    public static readonly FastKernel CoopMatrix = new("attention (flash)", "NV cooperative matrices 16x16x16 fp16->fp32", "fp32 flash",
        CoopMatrixUnavailable, SelfCheckCoopMatrix);

    /// <summary>Why this device cannot run the cooperative-matrix flash variants (null when it can).</summary>
    public static string? CoopMatrixUnavailable(DeviceCapabilities caps) =>
        KernelPaths.NvCooperativeMatrixUnavailable(caps, CoopMatrixSharedBytes, FlashWorkgroupSize);

    /// <summary>
    /// The first-use self-check: forward and backward with <see cref="AttentionAlgorithm.FlashCoopMatrix"/> and with the fp32
    /// <see cref="AttentionAlgorithm.Flash"/> kernel on <see cref="SelfCheckCases"/>; they may differ by the sum of both
    /// kernels' bounds against float64 (<see cref="AttentionTolerances"/>, the cooperative-matrix one with its fp16 terms).
    /// </summary>
    public static string? SelfCheckCoopMatrix(VulkanContext ctx) =>
        SelfCheck(ctx, (c, s, t) => RunForwardBackward(c, s, t, AttentionAlgorithm.FlashCoopMatrix),
            (c, s, t) => RunForwardBackward(c, s, t, AttentionAlgorithm.Flash), SelfCheckCases);

    /// <summary>Inputs of one self-check case: q, k, v and dO in the layouts of <see cref="Forward"/> and <see cref="Backward"/>.</summary>
    public sealed record SelfCheckInputs(float[] Q, float[] K, float[] V, float[] DO);

    /// <summary>One self-check case: the shape, the magnitude of q and k entries (|q·k| ≈ hd·magnitude²) and of dO.</summary>
    public sealed record SelfCheckCase(AttentionShape Shape, float QkMagnitude, float DoMagnitude)
    {
        /// <summary>Seeded inputs: with QkMagnitude above 1, q and k entries of 0.5..1 times it, 90% positive (large scores).</summary>
        public SelfCheckInputs Inputs()
        {
            var rng = new Random(Shape.SeqLen);
            bool big = QkMagnitude > 1;
            float[] Values(int n, float scale, bool biased)
            {
                var x = new float[n];
                for (int i = 0; i < n; i++)
                {
                    double u = rng.NextDouble();
                    x[i] = (float)((biased ? (0.5 + 0.5 * u) * (rng.NextDouble() < 0.9 ? 1 : -1) : 2 * u - 1) * scale);
                }
                return x;
            }
            return new(Values(Shape.QCount, QkMagnitude, big), Values(Shape.KCount, QkMagnitude, big), Values(Shape.KCount, 1, false),
                Values(Shape.QCount, DoMagnitude, false));
        }
    }

    /// <summary>
    /// The cooperative-matrix self-check's cases: GQA 2:1 at head dimension 48 (zero-padded to a variant) with cached
    /// keys and queries that are not a multiple of the 16-row blocks; and a range case (head dimension 64, |q·k| near 1e3
    /// before scaling, dO near 1e-6, below fp16's normal range) that an fp16 kernel without its scaling and hi/lo
    /// operands fails.
    /// </summary>
    public static IReadOnlyList<SelfCheckCase> SelfCheckCases { get; } =
    [
        new(new AttentionShape(1, 37, 5, 4, 2, 48, 42), 1f, 1f),
        new(new AttentionShape(1, 21, 0, 2, 1, 64, 21), 4f, 1e-6f),
    ];

    /// <summary>Runs one forward and backward on a case's inputs and returns o, lse, dq, dk, dv.</summary>
    public delegate float[][] SelfCheckRunner(VulkanContext ctx, AttentionShape shape, SelfCheckInputs inputs);

    /// <summary>
    /// Runs <paramref name="fast"/> and <paramref name="reference"/> on <paramref name="cases"/> and returns null when every
    /// output agrees within the sum of the cooperative-matrix and the fp32 bounds against float64, else the first mismatch.
    /// </summary>
    public static string? SelfCheck(VulkanContext ctx, SelfCheckRunner fast, SelfCheckRunner reference, IEnumerable<SelfCheckCase> cases)
    {
        ArgumentNullException.ThrowIfNull(fast);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(cases);
        foreach (var c in cases)
        {
            var s = c.Shape;
            var inputs = c.Inputs();
            var f = fast(ctx, s, inputs);
            var r = reference(ctx, s, inputs);
            double[] q = Array.ConvertAll(inputs.Q, x => (double)x), k = Array.ConvertAll(inputs.K, x => (double)x),
                v = Array.ConvertAll(inputs.V, x => (double)x), dO = Array.ConvertAll(inputs.DO, x => (double)x);
            var tf = AttentionTolerances.For(s, q, k, v, dO, coopMatrix: true);
            var tr = AttentionTolerances.For(s, q, k, v, dO);
            string[] names = ["o", "lse", "dq", "dk", "dv"];
            double[][] fastTol = [tf.O, tf.Lse, tf.Dq, tf.Dk, tf.Dv], refTol = [tr.O, tr.Lse, tr.Dq, tr.Dk, tr.Dv];
            for (int t = 0; t < names.Length; t++)
                for (int i = 0; i < f[t].Length; i++)
                    if (!(Math.Abs(f[t][i] - r[t][i]) <= fastTol[t][i] + refTol[t][i]))
                        return $"{names[t]} (T {s.SeqLen}, cached {s.StartPos}, hd {s.HeadDim}, {s.NHeads}:{s.NKvHeads} heads, "
                            + $"|q·k| up to {s.HeadDim * c.QkMagnitude * c.QkMagnitude:0}, dO up to {c.DoMagnitude:g2}) element {i}: {f[t][i]:g6} vs {r[t][i]:g6}";
        }
        return null;
    }

    /// <summary>o, lse, dq, dk, dv of one forward and backward with <paramref name="algorithm"/> on fresh device tensors.</summary>
    public static float[][] RunForwardBackward(VulkanContext ctx, AttentionShape s, SelfCheckInputs inputs, AttentionAlgorithm algorithm)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(inputs);
        long rows = (long)s.Batch * s.SeqLen, kvRows = (long)s.Batch * s.KvStride;
        DeviceTensor Make(string name, long r, long c) => DeviceTensor.Create(ctx, "selfcheck.attention." + name, DType.F32, [r, c], Memory.MemoryCategory.Workspace);
        using var tq = Make("q", rows, s.Ldq);
        using var tk = Make("k", kvRows, s.Ldk);
        using var tv = Make("v", kvRows, s.Ldk);
        using var tdO = Make("dO", rows, s.Ldq);
        using var to = Make("o", rows, s.Ldq);
        using var tl = Make("lse", (long)s.Batch * s.NHeads, s.SeqLen);
        using var tdq = Make("dq", rows, s.Ldq);
        using var tdk = Make("dk", kvRows, s.Ldk);
        using var tdv = Make("dv", kvRows, s.Ldk);
        using var tdelta = Make("delta", (long)s.Batch * s.NHeads, s.SeqLen);
        tq.Upload<float>(inputs.Q);
        tk.Upload<float>(inputs.K);
        tv.Upload<float>(inputs.V);
        tdO.Upload<float>(inputs.DO);
        Forward(tq, tk, tv, to, tl, s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);
        Backward(tq, tk, tv, to, tl, tdO, tdq, tdk, tdv, tdelta, s.Batch, s.SeqLen, s.StartPos, s.NHeads, s.NKvHeads, s.HeadDim, algorithm);
        return [to.ToArray<float>(), tl.ToArray<float>(), tdq.ToArray<float>(), tdk.ToArray<float>(), tdv.ToArray<float>()];
    }

    private enum Kernel { Forward = 0, Dq = 2, Dkv = 4 }

    /// <summary>Mirrors the push block of include/attention.glsl.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint T, S, StartPos, KvStride, Group, NHeads, Ldq, Ldk;
        public float Scale;
        public uint HeadDim;
        public uint Off0, Off1, Off2, Off3, Off4, Off5, Off6, Off7;
        public uint HeadLo, HeadHi, Lo, Hi, Accumulate;
    }

    /// <summary>
    /// lavapipe (gallivm) ends every loop of a shader invocation once 65535 iterations have run in total. The kernels
    /// loop about 2·headDim times per key (forward, dq) or per (query head, query) pair (dkv), so on CPU devices each
    /// dispatch gets a bounded share of them and dispatches are chained (the first writes, later ones combine).
    /// </summary>
    internal const long LoopBudget = 60000;

    /// <summary>
    /// Loop iterations per key or pair (dot and update loops, plus rescale and staging shares), conservatively. The flash
    /// kernels split each row's head dimension over four invocations: each loops over a quarter of it per key for the
    /// partial dot products and for the update, plus the partial-sum and staging shares.
    /// </summary>
    private static long ItersPerRow(AttentionAlgorithm algorithm, int headDim) => algorithm is AttentionAlgorithm.Flash or AttentionAlgorithm.FlashCoopMatrix
        ? headDim / 2 + headDim / 4 + 16
        : 2L * headDim + headDim / 4 + 4;

    /// <summary>Keys or pairs one dispatch may loop over: bounded on CPU devices, unbounded elsewhere; capped by a request.</summary>
    private static long RowsPerDispatch(VulkanContext ctx, AttentionAlgorithm algorithm, int headDim, int requested)
    {
        long n = ctx.Caps.Kind == DeviceKind.Cpu ? Math.Max((LoopBudget - 4L * headDim) / ItersPerRow(algorithm, headDim), 1) : long.MaxValue;
        return requested > 0 ? Math.Min(n, requested) : n;
    }

    /// <summary>
    /// The faster algorithm per device kind for the forward and the backward, measured with `bench kernels` (T = 512
    /// and 2,048, head dimension 64 and 128, 8:2 heads): on lavapipe the direct kernels ran the forward 2.0–2.7× and
    /// the backward 1.6–3.0× faster than flash (broadcast loads of one row per invocation suit its SIMD-across-
    /// invocations model). Kinds not listed (GPUs) run flash.
    /// </summary>
    private static readonly Dictionary<DeviceKind, (AttentionAlgorithm Forward, AttentionAlgorithm Backward)> Faster = new()
    {
        [DeviceKind.Cpu] = (AttentionAlgorithm.Direct, AttentionAlgorithm.Direct),
    };

    private static readonly ConditionalWeakTable<VulkanContext, StrongBox<AttentionAlgorithm>> Forced = new();

    /// <summary>The algorithm Auto picks on this device for the forward (or the backward).</summary>
    public static AttentionAlgorithm Choose(VulkanContext ctx, bool backward = false)
    {
        if (Forced.TryGetValue(ctx, out var forced)) return forced.Value;
        return Faster.TryGetValue(ctx.Caps.Kind, out var f) ? (backward ? f.Backward : f.Forward) : AttentionAlgorithm.Flash;
    }

    /// <summary>Why Auto picks <see cref="Choose"/>'s algorithm on this device (for `vkpeft info`).</summary>
    public static string WhyChosen(VulkanContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        if (Forced.TryGetValue(ctx, out _)) return "forced for this context (tests, benchmarks)";
        return Faster.ContainsKey(ctx.Caps.Kind)
            ? $"{ctx.Caps.Kind} device: measured faster than flash there (bench kernels; broadcast loads of one row per invocation)"
            : $"{ctx.Caps.Kind} device: FlashAttention-2 style tiles (the direct kernels win only on CPU devices)";
    }

    /// <summary>Makes Auto pick <paramref name="algorithm"/> on this device until the result is disposed (tests, benchmarks).</summary>
    public static IDisposable Force(VulkanContext ctx, AttentionAlgorithm algorithm)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        if (algorithm == AttentionAlgorithm.Auto) throw new ArgumentException("attention: force a concrete algorithm, not Auto", nameof(algorithm));
        Forced.AddOrUpdate(ctx, new StrongBox<AttentionAlgorithm>(algorithm));
        return new Unforce(ctx);
    }

    private sealed class Unforce(VulkanContext ctx) : IDisposable
    {
        public void Dispose() => Forced.Remove(ctx);
    }

    /// <summary>
    /// o = softmax(q·kᵀ/√headDim + causal mask)·v for <paramref name="batch"/> sequences of <paramref name="seqLen"/>
    /// queries each, at positions startPos..startPos+seqLen−1; query head h uses kv head h / (nHeads/nKvHeads).
    /// Layouts (row-major f32): q and o [batch·seqLen, nHeads·headDim]; k and v [batch·kvStride, nKvHeads·headDim] where
    /// kvStride = k rows / batch ≥ startPos+seqLen (a KV cache may hold more rows; keys past startPos+seqLen are not
    /// read); lse [batch, nHeads, seqLen] receives log Σ_j exp(score_ij), which <see cref="Backward"/> needs. Writes o
    /// and lse (never accumulates). Keys are processed in dispatches of at most <paramref name="keysPerDispatch"/> keys
    /// (0: as many as the device allows; CPU devices limit it), merged with an exact log-sum-exp combine.
    /// </summary>
    public static void Forward(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor o, DeviceTensor lse,
        int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim, AttentionAlgorithm algorithm = AttentionAlgorithm.Auto,
        int keysPerDispatch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keysPerDispatch);
        var g = Geometry.Check(q, k, batch, seqLen, startPos, nHeads, nKvHeads, headDim);
        g.Same("k", k, "v", v);
        g.Same("q", q, "o", o);
        g.Lse("lse", lse);
        if (seqLen == 0 || batch == 0) return;
        var ctx = q.Context;
        algorithm = Resolve(ctx, algorithm, backward: false);
        if (!Whole(q, k, v, o, lse))
        {
            ForwardChunked(g, q, k, v, o, lse, algorithm, keysPerDispatch);
            return;
        }
        var (push, ranges) = g.Bind([q, k, v, o, lse]);
        var timed = new Timed(ctx, g, "attention.fwd", algorithm, 4);
        long keys = (long)startPos + seqLen, chunk = Math.Min(RowsPerDispatch(ctx, algorithm, headDim, keysPerDispatch), timed.KeysPerDispatch());
        for (long k0 = 0; k0 < keys; k0 += chunk)
        {
            push.Lo = (uint)k0; push.Hi = (uint)Math.Min(keys, k0 + chunk); push.Accumulate = k0 == 0 ? 0u : 1u;
            var access = k0 == 0 ? Access.Write : Access.ReadWrite;
            double units = timed.KeyRangeUnits(push.Lo, push.Hi);
            Dispatch(ctx, Kernel.Forward, algorithm, headDim, push,
                [Binding.Read(ranges[0]), Binding.Read(ranges[1]), Binding.Read(ranges[2]), new Binding(ranges[3], access), new Binding(ranges[4], access)],
                seqLen, (uint)nHeads, (uint)batch, timed.Label, timed.Budget.Learn(timed.Key, units));
            timed.Budget.Queued(ctx, timed.Key, units);
        }
    }

    /// <summary>
    /// Gradients of <see cref="Forward"/> given dO = ∂loss/∂o (same layouts as Forward; dq like q, dk and dv like k).
    /// Probabilities are recomputed from <paramref name="lse"/> (the Forward output for these q, k). GQA: dk and dv of a
    /// kv head sum over its query heads in a fixed order (deterministic). Keys no query sees (rows past
    /// startPos+seqLen of each sequence) get zero gradients. <paramref name="delta"/> [batch, nHeads, seqLen] is a
    /// workspace that receives D_i = Σ dO_i ⊙ o_i. Writes dq, dk, dv and delta (never accumulates).
    /// dq is computed in dispatches of at most <paramref name="keysPerDispatch"/> keys and dk/dv in dispatches of at most
    /// <paramref name="dkvPairsPerDispatch"/> (query head, query) pairs per key (0: as many as the device allows; CPU
    /// devices limit them), summed in a fixed order.
    /// </summary>
    public static void Backward(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor o, DeviceTensor lse, DeviceTensor dO,
        DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, DeviceTensor delta,
        int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim, AttentionAlgorithm algorithm = AttentionAlgorithm.Auto,
        int keysPerDispatch = 0, int dkvPairsPerDispatch = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(keysPerDispatch);
        ArgumentOutOfRangeException.ThrowIfNegative(dkvPairsPerDispatch);
        var g = Geometry.Check(q, k, batch, seqLen, startPos, nHeads, nKvHeads, headDim);
        g.Same("k", k, "v", v);
        g.Same("k", k, "dk", dk);
        g.Same("k", k, "dv", dv);
        g.Same("q", q, "o", o);
        g.Same("q", q, "dO", dO);
        g.Same("q", q, "dq", dq);
        g.Lse("lse", lse);
        g.Lse("delta", delta);
        if (batch == 0) return;
        var ctx = q.Context;
        algorithm = Resolve(ctx, algorithm, backward: true);
        if (seqLen == 0)
        {
            BasicOps.Fill(dk, 0);   // no query sees any key
            BasicOps.Fill(dv, 0);
            return;
        }
        if (!Whole(q, k, v, o, lse, dO, dq, dk, dv, delta))
        {
            BackwardChunked(g, q, k, v, o, lse, dO, dq, dk, dv, algorithm, keysPerDispatch, dkvPairsPerDispatch);
            return;
        }
        BackwardWhole(g, q, k, v, o, lse, dO, dq, dk, dv, delta, algorithm, keysPerDispatch, dkvPairsPerDispatch, accumulateDkv: false);
    }

    /// <summary>The backward with every operand in one binding; with <paramref name="accumulateDkv"/> dk and dv are added to.</summary>
    private static void BackwardWhole(Geometry g, DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor o, DeviceTensor lse, DeviceTensor dO,
        DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, DeviceTensor delta, AttentionAlgorithm algorithm, int keysPerDispatch, int dkvPairsPerDispatch,
        bool accumulateDkv)
    {
        var ctx = q.Context;
        int seqLen = g.SeqLen, batch = g.Batch, nHeads = g.NHeads, nKvHeads = g.NKvHeads, headDim = g.HeadDim;
        var timed = new Timed(ctx, g, "attention.bwd.dq", algorithm, 6);
        long keys = (long)g.StartPos + seqLen, chunk = Math.Min(RowsPerDispatch(ctx, algorithm, headDim, keysPerDispatch), timed.KeysPerDispatch());
        var (push, r) = g.Bind([q, k, v, o, dO, lse, delta, dq]);
        for (long k0 = 0; k0 < keys; k0 += chunk)
        {
            push.Lo = (uint)k0; push.Hi = (uint)Math.Min(keys, k0 + chunk); push.Accumulate = k0 == 0 ? 0u : 1u;
            double units = timed.KeyRangeUnits(push.Lo, push.Hi);
            Dispatch(ctx, Kernel.Dq, algorithm, headDim, push,
                [Binding.Read(r[0]), Binding.Read(r[1]), Binding.Read(r[2]), Binding.Read(r[3]), Binding.Read(r[4]), Binding.Read(r[5]), Binding.Write(r[6]),
                 new Binding(r[7], k0 == 0 ? Access.Write : Access.ReadWrite)],
                seqLen, (uint)nHeads, (uint)batch, timed.Label, timed.Budget.Learn(timed.Key, units));
            timed.Budget.Queued(ctx, timed.Key, units);
        }
        (push, r) = g.Bind([q, k, v, dO, lse, delta, dk, dv]);
        // dk/dv sum over group·seqLen (query head, query) pairs: chunks of at most perChunk pairs, whole heads while a
        // head fits, in a fixed order; the first chunk writes, the rest add.
        int group = nHeads / nKvHeads;
        timed = new Timed(ctx, g, "attention.bwd.dkv", algorithm, 8);
        long perChunk = Math.Min(RowsPerDispatch(ctx, algorithm, headDim, dkvPairsPerDispatch), timed.PairsPerDispatch());
        int headsPerChunk = (int)Math.Clamp(perChunk / seqLen, 1, group);
        int rowsPerChunk = (int)Math.Min(seqLen, perChunk);
        bool first = !accumulateDkv;
        for (int h0 = 0; h0 < group; h0 += headsPerChunk)
        {
            for (int i0 = 0; i0 < seqLen; i0 += rowsPerChunk)
            {
                push.HeadLo = (uint)h0; push.HeadHi = (uint)Math.Min(group, h0 + headsPerChunk);
                push.Lo = (uint)i0; push.Hi = (uint)Math.Min(seqLen, i0 + rowsPerChunk);
                push.Accumulate = first ? 0u : 1u;
                var outAccess = first ? Access.Write : Access.ReadWrite;
                double units = timed.PairRangeUnits(push.HeadHi - push.HeadLo, push.Lo, push.Hi);
                Dispatch(ctx, Kernel.Dkv, algorithm, headDim, push,
                    [Binding.Read(r[0]), Binding.Read(r[1]), Binding.Read(r[2]), Binding.Read(r[3]), Binding.Read(r[4]), Binding.Read(r[5]), new Binding(r[6], outAccess), new Binding(r[7], outAccess)],
                    g.KvStride, (uint)nKvHeads, (uint)batch, timed.Label, timed.Budget.Learn(timed.Key, units));
                timed.Budget.Queued(ctx, timed.Key, units);
                first = false;
            }
        }
    }

    private static bool Whole(params DeviceTensor[] ts) => ts.All(t => t.Segments.Count == 1);

    /// <summary>Rows of <paramref name="t"/> from <paramref name="row"/> to the end of the segment holding it.</summary>
    private static long RowsInSegment(DeviceTensor t, long row)
    {
        foreach (var seg in t.Segments)
            if (row >= seg.FirstRow && row < seg.FirstRow + seg.Rows) return seg.FirstRow + seg.Rows - row;
        throw new ArgumentOutOfRangeException(nameof(row), $"row {row} outside '{t.Name}' {t.ShapeString}");
    }

    /// <summary>
    /// Query chunks of one binding each, sequence by sequence: (sequence, first query, queries). Every [rows, …] operand
    /// in <paramref name="rowTensors"/> is cut at its own segment boundaries, so each chunk view is one binding.
    /// </summary>
    private static IEnumerable<(int B, int T0, int N)> QueryChunks(Geometry g, DeviceTensor[] rowTensors)
    {
        for (int b = 0; b < g.Batch; b++)
            for (int t0 = 0; t0 < g.SeqLen;)
            {
                long row = (long)b * g.SeqLen + t0, n = g.SeqLen - t0;
                foreach (var t in rowTensors) n = Math.Min(n, RowsInSegment(t.Reshape((long)g.Batch * g.SeqLen, t.Count / ((long)g.Batch * g.SeqLen)), row));
                yield return (b, t0, (int)n);
                t0 += (int)n;
            }
    }

    /// <summary>The keys (or values, or their gradients) query chunk [t0, t0+n) of sequence b sees: one binding.</summary>
    private static DeviceTensor KeyView(Geometry g, DeviceTensor t, int b, int t0, int n)
    {
        var rows = t.Reshape(g.Batch * g.KvStride, (long)g.NKvHeads * g.HeadDim).RowsView(b * g.KvStride, g.StartPos + t0 + n);
        if (rows.Segments.Count != 1)
            throw new ArgumentException($"attention: the keys of one sequence in '{t.Name}' {t.ShapeString} span several bindings; attention needs them in one");
        return rows;
    }

    private static DeviceTensor QueryView(Geometry g, DeviceTensor t, int b, int t0, int n) =>
        t.Reshape((long)g.Batch * g.SeqLen, (long)g.NHeads * g.HeadDim).RowsView((long)b * g.SeqLen + t0, n);

    /// <summary>Copies lse-shaped rows between [batch, nHeads, seqLen] (positions t0..t0+n of sequence b) and a [1, nHeads, n] chunk.</summary>
    private static void CopyLse(Geometry g, DeviceTensor full, DeviceTensor chunk, int b, int t0, int n, bool toChunk)
    {
        var ctx = full.Context;
        for (int h = 0; h < g.NHeads; h++)
        {
            var (fr, fo) = Pieces.RangeOf(full, ((long)b * g.NHeads + h) * g.SeqLen + t0, n);
            var (cr, co) = Pieces.RangeOf(chunk, (long)h * n, n);
            var f = fr.Slice(fo * 4UL, (ulong)n * 4);
            var c = cr.Slice(co * 4UL, (ulong)n * 4);
            if (toChunk) ctx.Commands.Copy(f, c, (ulong)n * 4);
            else ctx.Commands.Copy(c, f, (ulong)n * 4);
        }
    }

    private static void ForwardChunked(Geometry g, DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor o, DeviceTensor lse,
        AttentionAlgorithm algorithm, int keysPerDispatch)
    {
        using var lseChunk = DeviceTensor.Create(q.Context, "attention.lse_chunk", DType.F32, [(long)g.NHeads * g.SeqLen], MemoryCategory.Workspace);
        foreach (var (b, t0, n) in QueryChunks(g, [q, o]))
        {
            var lt = lseChunk.RowsView(0, (long)g.NHeads * n).Reshape(1, g.NHeads, n);
            Forward(QueryView(g, q, b, t0, n), KeyView(g, k, b, t0, n), KeyView(g, v, b, t0, n), QueryView(g, o, b, t0, n), lt,
                1, n, g.StartPos + t0, g.NHeads, g.NKvHeads, g.HeadDim, algorithm, keysPerDispatch);
            CopyLse(g, lse, lseChunk, b, t0, n, toChunk: false);
        }
    }

    private static void BackwardChunked(Geometry g, DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor o, DeviceTensor lse, DeviceTensor dO,
        DeviceTensor dq, DeviceTensor dk, DeviceTensor dv, AttentionAlgorithm algorithm, int keysPerDispatch, int dkvPairsPerDispatch)
    {
        var ctx = q.Context;
        BasicOps.Fill(dk, 0);   // every chunk adds the gradients of the keys its queries see
        BasicOps.Fill(dv, 0);
        using var lseChunk = DeviceTensor.Create(ctx, "attention.lse_chunk", DType.F32, [(long)g.NHeads * g.SeqLen], MemoryCategory.Workspace);
        using var deltaChunk = DeviceTensor.Create(ctx, "attention.delta_chunk", DType.F32, [(long)g.NHeads * g.SeqLen], MemoryCategory.Workspace);
        foreach (var (b, t0, n) in QueryChunks(g, [q, o, dO, dq]))
        {
            var lt = lseChunk.RowsView(0, (long)g.NHeads * n).Reshape(1, g.NHeads, n);
            var dt = deltaChunk.RowsView(0, (long)g.NHeads * n).Reshape(1, g.NHeads, n);
            CopyLse(g, lse, lseChunk, b, t0, n, toChunk: true);
            var kv = KeyView(g, k, b, t0, n);
            var cg = Geometry.Check(QueryView(g, q, b, t0, n), kv, 1, n, g.StartPos + t0, g.NHeads, g.NKvHeads, g.HeadDim);
            BackwardWhole(cg, QueryView(g, q, b, t0, n), kv, KeyView(g, v, b, t0, n), QueryView(g, o, b, t0, n), lt, QueryView(g, dO, b, t0, n),
                QueryView(g, dq, b, t0, n), KeyView(g, dk, b, t0, n), KeyView(g, dv, b, t0, n), dt, algorithm, keysPerDispatch, dkvPairsPerDispatch,
                accumulateDkv: true);
        }
    }

    private static AttentionAlgorithm Resolve(VulkanContext ctx, AttentionAlgorithm algorithm, bool backward)
    {
        if (algorithm == AttentionAlgorithm.Auto)
        {
            algorithm = Choose(ctx, backward);
            if (algorithm == AttentionAlgorithm.Flash && ctx.Kernels.Use(CoopMatrix)) algorithm = AttentionAlgorithm.FlashCoopMatrix;
        }
        if (algorithm is AttentionAlgorithm.Shared or AttentionAlgorithm.Flash or AttentionAlgorithm.FlashCoopMatrix && ctx.Caps.MaxComputeWorkGroupInvocations < SharedWorkgroupSize)
            throw new ArgumentException($"attention: the {algorithm} algorithm needs {SharedWorkgroupSize}-invocation workgroups; the device allows {ctx.Caps.MaxComputeWorkGroupInvocations}");
        if (algorithm == AttentionAlgorithm.FlashCoopMatrix && CoopMatrixUnavailable(ctx.Caps) is { } why)
            throw new ArgumentException($"attention: the {algorithm} algorithm cannot run on '{ctx.Caps.Name}': {why}");
        return algorithm;
    }

    /// <summary>
    /// One kernel's share of the device's <see cref="DispatchBudget"/>: work units are FLOPs, <paramref name="flopsPerPair"/>
    /// per (query, key) pair and head dimension (forward 4: q·k and p·v; dq 6; dk/dv 8), counting only the pairs the
    /// causal mask keeps.
    /// </summary>
    private sealed class Timed(VulkanContext ctx, Geometry g, string label, AttentionAlgorithm algorithm, int flopsPerPair)
    {
        public DispatchBudget Budget { get; } = DispatchBudget.For(ctx);
        public string Label => label;
        public string Key { get; } = $"{label}.{algorithm}";

        private double PerPair => (double)flopsPerPair * g.HeadDim;

        /// <summary>Keys per dispatch (forward, dq): a key costs at most one pair per query of every head and sequence.</summary>
        public long KeysPerDispatch() => Budget.ItemsPerDispatch(Key, PerPair * g.SeqLen * g.NHeads * g.Batch, (int)FlashRows);

        /// <summary>(query head, query) pairs per dispatch (dk/dv): one costs at most every key of every kv head and sequence.</summary>
        public long PairsPerDispatch() => Budget.ItemsPerDispatch(Key, PerPair * (g.StartPos + g.SeqLen) * g.NKvHeads * g.Batch, (int)FlashRows);

        /// <summary>Work of keys [lo, hi) against every query (forward, dq).</summary>
        public double KeyRangeUnits(uint lo, uint hi)
        {
            double pairs = 0;
            for (long i = 0; i < g.SeqLen; i++)
                pairs += Math.Max(0, Math.Min(hi, g.StartPos + i + 1) - lo);
            return pairs * PerPair * g.NHeads * g.Batch;
        }

        /// <summary>Work of <paramref name="heads"/> query heads per kv head times queries [lo, hi) against the keys they see (dk/dv).</summary>
        public double PairRangeUnits(uint heads, uint lo, uint hi)
        {
            double keys = 0;
            for (long i = lo; i < hi; i++) keys += g.StartPos + i + 1;
            return keys * heads * PerPair * g.NKvHeads * g.Batch;
        }
    }

    private static void Dispatch(VulkanContext ctx, Kernel kernel, AttentionAlgorithm algorithm, int headDim, in Push push,
        ReadOnlySpan<Binding> bindings, long rows, uint groupsY, uint groupsZ, string label, Action<double>? onDeviceSeconds = null)
    {
        bool shared = algorithm == AttentionAlgorithm.Shared, coop = algorithm == AttentionAlgorithm.FlashCoopMatrix;
        bool flash = coop || algorithm == AttentionAlgorithm.Flash;
        var dims = coop ? CoopMatrixHeadDimList : flash ? FlashHeadDimList : HeadDimList;
        int variant = 0;
        while (dims[variant] < headDim) variant++;
        uint wg = flash ? FlashWorkgroupSize : shared ? SharedWorkgroupSize : DirectWorkgroupSize;
        // Flash query-row kernels pack the query heads of a kv-head group into one workgroup (as many as divide both
        // the group and the workgroup's rows), so each staged key/value block serves them all.
        uint heads = flash && kernel != Kernel.Dkv ? Gcd(push.Group, FlashRows) : 1;
        uint rowsPerGroup = flash ? FlashRows / heads : wg;
        groupsY /= heads;
        long groupsX = (rows + rowsPerGroup - 1) / rowsPerGroup;
        var max = ctx.Caps.MaxComputeWorkGroupCount;
        if (groupsX > max[0] || groupsY > max[1] || groupsZ > max[2])
            throw new ArgumentException($"attention: {groupsX}x{groupsY}x{groupsZ} workgroups exceed the device limit {string.Join("x", max)}");
        var id = coop ? CoopMatrixShaders[(int)kernel / 2, variant]
            : flash ? FlashShaders[(int)kernel / 2, variant] : Shaders[(int)kernel + (shared ? 1 : 0), variant];
        var pipeline = flash ? ctx.Pipelines.Get(id, wg, heads) : ctx.Pipelines.Get(id, wg);
        ctx.Commands.Dispatch(pipeline, bindings, push, (uint)groupsX, groupsY, groupsZ, label, onDeviceSeconds);
    }

    private static uint Gcd(uint a, uint b) => b == 0 ? a : Gcd(b, a % b);

    /// <summary>Validated sizes of one attention call and the push constants they give.</summary>
    private sealed record Geometry(int Batch, int SeqLen, int StartPos, int NHeads, int NKvHeads, int HeadDim, long KvStride)
    {
        public long QCount => (long)Batch * SeqLen * NHeads * HeadDim;
        public long KCount => Batch * KvStride * NKvHeads * HeadDim;

        public static Geometry Check(DeviceTensor q, DeviceTensor k, int batch, int seqLen, int startPos, int nHeads, int nKvHeads, int headDim)
        {
            ArgumentNullException.ThrowIfNull(q);
            ArgumentNullException.ThrowIfNull(k);
            if (batch < 0 || seqLen < 0 || startPos < 0)
                throw new ArgumentException($"attention: batch ({batch}), seqLen ({seqLen}) and startPos ({startPos}) must be non-negative");
            if (nHeads <= 0 || nKvHeads <= 0 || nHeads % nKvHeads != 0)
                throw new ArgumentException($"attention: nHeads ({nHeads}) must be a positive multiple of nKvHeads ({nKvHeads})");
            if (headDim <= 0 || headDim > MaxHeadDim)
                throw new ArgumentException($"attention: headDim {headDim} is outside the supported 1..{MaxHeadDim}");
            long kvRow = (long)nKvHeads * headDim;
            long stride = batch == 0 ? 0 : k.Count / ((long)batch * kvRow);
            var g = new Geometry(batch, seqLen, startPos, nHeads, nKvHeads, headDim, stride);
            if (q.Count != g.QCount)
                throw new ArgumentException($"attention: q '{q.Name}' {q.ShapeString} should hold batch·seqLen·nHeads·headDim = {batch}·{seqLen}·{nHeads}·{headDim} = {g.QCount} elements");
            if (batch > 0 && (k.Count % (batch * kvRow) != 0 || stride < (long)startPos + seqLen))
                throw new ArgumentException($"attention: k '{k.Name}' {k.ShapeString} should hold batch·kvStride rows of nKvHeads·headDim = {kvRow} with kvStride ≥ startPos+seqLen = {(long)startPos + seqLen}");
            if (g.QCount > uint.MaxValue || g.KCount > uint.MaxValue || (long)batch * nHeads * seqLen > uint.MaxValue)
                throw new ArgumentException("attention: tensors over 2³² elements are not supported");
            return g;
        }

        public void Same(string refName, DeviceTensor reference, string name, DeviceTensor t)
        {
            ArgumentNullException.ThrowIfNull(t);
            if (t.Count != reference.Count)
                throw new ArgumentException($"attention: {name} '{t.Name}' {t.ShapeString} must hold as many elements as {refName} '{reference.Name}' {reference.ShapeString} ({reference.Count})");
        }

        public void Lse(string name, DeviceTensor t)
        {
            ArgumentNullException.ThrowIfNull(t);
            long n = (long)Batch * NHeads * SeqLen;
            if (t.Count != n)
                throw new ArgumentException($"attention: {name} '{t.Name}' {t.ShapeString} should be [batch, nHeads, seqLen] = [{Batch}, {NHeads}, {SeqLen}] ({n} elements)");
        }

        /// <summary>One binding per tensor (each must be unsplit) and the push block with their element offsets.</summary>
        public (Push Push, Memory.BufferRange[] Ranges) Bind(DeviceTensor[] ts)
        {
            BasicOps.RequireF32(ts);
            var ranges = new Memory.BufferRange[ts.Length];
            var offs = new uint[8];
            for (int i = 0; i < ts.Length; i++)
            {
                if (ts[i].Segments.Count != 1)
                    throw new ArgumentException($"attention: '{ts[i].Name}' {ts[i].ShapeString} is split into {ts[i].Segments.Count} segments; attention needs each operand in one binding (per-layer activations fit one)");
                (ranges[i], offs[i]) = Pieces.RangeOf(ts[i], 0, ts[i].Count);
            }
            var push = new Push
            {
                T = (uint)SeqLen, S = (uint)(StartPos + SeqLen), StartPos = (uint)StartPos, KvStride = (uint)KvStride,
                Group = (uint)(NHeads / NKvHeads), NHeads = (uint)NHeads, Ldq = (uint)(NHeads * HeadDim), Ldk = (uint)(NKvHeads * HeadDim),
                Scale = (float)(1.0 / Math.Sqrt(HeadDim)), HeadDim = (uint)HeadDim,
                Off0 = offs[0], Off1 = offs[1], Off2 = offs[2], Off3 = offs[3], Off4 = offs[4], Off5 = offs[5], Off6 = offs[6], Off7 = offs[7],
                HeadLo = 0, HeadHi = (uint)(NHeads / NKvHeads), Lo = 0, Hi = (uint)SeqLen, Accumulate = 0,
            };
            return (push, ranges);
        }
    }
}
