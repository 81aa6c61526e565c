// LLaMA-Adapter's gated prompt attention on the device: every query row attends, in a softmax of its own, to P learned
// prompt keys/values (no mask, no RoPE), and the result scaled by a scalar gate is added to the causal attention
// output. Forward keeps the probabilities and the ungated output for the backward, which gives dq (added to the causal
// attention's), the prompt keys' and values' gradients and the gate's. Shaders: adaption_prompt_fwd, adaption_prompt_bwd.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class AdaptionPrompt
{
    /// <summary>
    /// The longest prompt the kernels take: the score pass loops P·(head_dim + 4) times per invocation, which stays
    /// under lavapipe's 65,535 loop iterations per invocation for head dimensions up to 128 (Attention.MaxHeadDim).
    /// </summary>
    public const int MaxPromptLength = 256;

    private const uint WorkgroupSize = 64;

    /// <summary>lavapipe ends a shader invocation's loops after 65,535 iterations in all: the dk/dv sums over rows are chained.</summary>
    private const long LoopBudget = 60000;

    /// <summary>Mirrors the push block of include/adaption_prompt.glsl.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Push
    {
        public uint Count, GroupsX, NHeads, Group, HeadDim, PromptLength;
        public float Scale;
        public uint RowLo, RowHi;
        public uint Off0, Off1, Off2, Off3, Off4, Off5, Off6;
    }

    /// <summary>
    /// probs [rows, n_heads, P] = softmax(scale·q·keysᵀ) per row and head; ungated [rows, n_heads·hd] = probs·values;
    /// output = baseOut + gate[0]·ungated. q, baseOut, ungated, output [rows, n_heads·hd]; keys, values [P, n_kv·hd]; gate [1].
    /// output and baseOut are distinct buffers.
    /// </summary>
    public static void Forward(DeviceTensor q, DeviceTensor keys, DeviceTensor values, DeviceTensor gate, DeviceTensor baseOut,
        DeviceTensor probs, DeviceTensor ungated, DeviceTensor output, int nHeads, int nKvHeads, int headDim)
    {
        var (rows, np) = Check(q, keys, values, gate, probs, nHeads, nKvHeads, headDim);
        OpChecks.RequireSameCount(q, baseOut, "adaption prompt base output");
        OpChecks.RequireSameCount(q, ungated, "adaption prompt ungated output");
        OpChecks.RequireSameCount(q, output, "adaption prompt output");
        if (rows == 0) return;
        var ctx = q.Context;
        var push = NewPush(nHeads, nKvHeads, headDim, np);
        Run(ctx, ShaderId.AdaptionPromptScores, 0, (long)rows * nHeads, push,
            [q, keys, probs], [Binding.Read, Binding.Read, Binding.ReadWrite], "adaption_prompt_scores");
        Run(ctx, ShaderId.AdaptionPromptOutput, 0, (long)rows * nHeads * headDim, push,
            [probs, values, gate, baseOut, ungated, output],
            [Binding.Read, Binding.Read, Binding.Read, Binding.Read, Binding.Write, Binding.Write],
            "adaption_prompt_output");
    }

    /// <summary>
    /// Backward of <see cref="Forward"/> from dOut = ∂loss/∂output: dq [rows, n_heads·hd] += ∂loss/∂q; dKeys, dValues
    /// [P, n_kv·hd] = ∂loss/∂keys, ∂loss/∂values (written); dGate [1] = ∂loss/∂gate (written). dScores [rows, n_heads, P]
    /// and rowDots [rows, n_heads] are scratch. probs and ungated are the forward's.
    /// </summary>
    public static void Backward(DeviceTensor q, DeviceTensor keys, DeviceTensor values, DeviceTensor gate, DeviceTensor probs, DeviceTensor ungated,
        DeviceTensor dOut, DeviceTensor dScores, DeviceTensor rowDots, DeviceTensor dq, DeviceTensor dKeys, DeviceTensor dValues, DeviceTensor dGate,
        int nHeads, int nKvHeads, int headDim)
    {
        var (rows, np) = Check(q, keys, values, gate, probs, nHeads, nKvHeads, headDim);
        OpChecks.RequireSameCount(q, ungated, "adaption prompt ungated output");
        OpChecks.RequireSameCount(q, dOut, "adaption prompt output gradient");
        OpChecks.RequireSameCount(q, dq, "adaption prompt dq");
        OpChecks.RequireSameCount(probs, dScores, "adaption prompt score gradient");
        OpChecks.RequireCount(rowDots, (long)rows * nHeads, "adaption prompt row dots");
        OpChecks.RequireSameCount(keys, dKeys, "adaption prompt key gradient");
        OpChecks.RequireSameCount(keys, dValues, "adaption prompt value gradient");
        OpChecks.RequireCount(dGate, 1, "adaption prompt gate gradient");
        var ctx = q.Context;
        if (rows == 0)
        {
            BasicOps.Fill(dKeys, 0); BasicOps.Fill(dValues, 0); BasicOps.Fill(dGate, 0);
            return;
        }
        var push = NewPush(nHeads, nKvHeads, headDim, np);
        Run(ctx, ShaderId.AdaptionPromptDscore, 0, (long)rows * nHeads * np, push,
            [dOut, values, ungated, probs, gate, dScores, rowDots],
            [Binding.Read, Binding.Read, Binding.Read, Binding.Read, Binding.Read, Binding.Write, Binding.Write], "adaption_prompt_dscore");
        Run(ctx, ShaderId.AdaptionPromptDq, 0, (long)rows * nHeads * headDim, push,
            [dScores, keys, dq], [Binding.Read, Binding.Read, Binding.ReadWrite], "adaption_prompt_dq");
        // Each dk/dv invocation loops over rows × (group + 1): on CPU devices the rows are split over chained dispatches.
        int group = nHeads / nKvHeads;
        long rowsPerDispatch = ctx.Caps.Kind == DeviceKind.Cpu ? Math.Max(LoopBudget / (group + 1), 1) : rows;
        for (long lo = 0; lo < rows; lo += rowsPerDispatch)
        {
            var p = push;
            p.RowLo = (uint)lo;
            p.RowHi = (uint)Math.Min(rows, lo + rowsPerDispatch);
            bool acc = lo > 0;
            var rw = acc ? (Func<BufferRange, Binding>)Binding.ReadWrite : Binding.Write;
            Run(ctx, ShaderId.AdaptionPromptDkv, acc ? 1u : 0u, dKeys.Count, p,
                [dScores, q, probs, dOut, gate, dKeys, dValues],
                [Binding.Read, Binding.Read, Binding.Read, Binding.Read, Binding.Read, rw, rw], "adaption_prompt_dkv");
        }
        BasicOps.SumAll(rowDots, dGate);
    }

    private static Push NewPush(int nHeads, int nKvHeads, int headDim, int np) => new()
    {
        NHeads = (uint)nHeads, Group = (uint)(nHeads / nKvHeads), HeadDim = (uint)headDim, PromptLength = (uint)np,
        Scale = (float)(1.0 / Math.Sqrt(headDim)),
    };

    private static void Run(VulkanContext ctx, ShaderId id, uint accumulate, long count, Push push, DeviceTensor[] operands,
        Func<BufferRange, Binding>[] roles, string label)
    {
        var bindings = new Binding[operands.Length];
        var offsets = new uint[7];
        for (int i = 0; i < operands.Length; i++)
        {
            var (range, offset) = OpChecks.Whole(operands[i]);
            bindings[i] = roles[i](range);
            offsets[i] = offset;
        }
        var (gx, gy) = OpChecks.Grid(ctx, (count + WorkgroupSize - 1) / WorkgroupSize);
        push.Count = checked((uint)count);
        push.GroupsX = gx;
        (push.Off0, push.Off1, push.Off2, push.Off3, push.Off4, push.Off5, push.Off6) = (offsets[0], offsets[1], offsets[2], offsets[3], offsets[4], offsets[5], offsets[6]);
        var pipeline = ctx.Pipelines.Get(id, WorkgroupSize, accumulate);
        ctx.Commands.Dispatch(pipeline, bindings, push, gx, gy, 1, label);
    }

    /// <summary>(rows, P) after checking shapes: q [rows, n_heads·hd], keys and values [P, n_kv·hd], gate [1], probs [rows, n_heads, P].</summary>
    private static (int Rows, int PromptLength) Check(DeviceTensor q, DeviceTensor keys, DeviceTensor values, DeviceTensor gate, DeviceTensor probs,
        int nHeads, int nKvHeads, int headDim)
    {
        BasicOps.RequireF32(q, keys, values, gate, probs);
        if (nHeads < 1 || nKvHeads < 1 || headDim < 1 || nHeads % nKvHeads != 0)
            throw new ArgumentException($"adaption prompt: {nHeads} query heads over {nKvHeads} KV heads of {headDim} is not a grouped-query layout");
        long qWidth = (long)nHeads * headDim, kvWidth = (long)nKvHeads * headDim;
        if (q.Count % qWidth != 0) throw new ArgumentException($"adaption prompt: q '{q.Name}' {q.ShapeString} is not rows of {qWidth}");
        if (keys.Count % kvWidth != 0 || keys.Count == 0)
            throw new ArgumentException($"adaption prompt: keys '{keys.Name}' {keys.ShapeString} are not rows of {kvWidth}");
        long rows = q.Count / qWidth, np = keys.Count / kvWidth;
        if (np > MaxPromptLength) throw new ArgumentException($"adaption prompt: {np} prompt positions, at most {MaxPromptLength}");
        OpChecks.RequireSameCount(keys, values, "adaption prompt values");
        OpChecks.RequireCount(gate, 1, "adaption prompt gate");
        OpChecks.RequireCount(probs, rows * nHeads * np, "adaption prompt probabilities");
        return (checked((int)rows), (int)np);
    }
}
