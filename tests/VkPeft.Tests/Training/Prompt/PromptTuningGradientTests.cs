// Prompt tuning on the device: the virtual-token row layout (scatter, gather, per-sequence backward) against its CPU
// layout over awkward sizes with guard regions; the GPU gradient of every prompt element against float64 central
// differences of the reference forward with the virtual tokens hooked in, checkpointing on and off, on an NF4+DQ base;
// the invariant that a prompt made of real token embeddings equals running the base with those tokens prepended (on the
// real tokens' logits); and generation with the prompt held once in the KV cache against the reference.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prompt;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training.Prompt;

[Collection("gpu")]
public sealed class PromptTuningGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    private static AdapterConfig Config(int virtualTokens, PromptInit init = PromptInit.Random, int[]? textIds = null) => new()
    {
        Method = PeftMethods.Get("prompt"), Targets = [], BaseQuant = BaseQuant.Parse("nf4-dq"),
        Settings = new PromptSettings(virtualTokens, init, textIds == null ? null : "text", textIds),
    };

    /// <summary>A hook over a given prompt tensor that sums the gradients it is handed into a tensor of its own.</summary>
    private sealed class SummingHook(DeviceTensor prompt, DeviceTensor grad) : IInputEmbeddingHook
    {
        public int VirtualTokens => (int)prompt.Rows;
        public DeviceTensor Embeddings => prompt;
        public void EmbeddingsBackward(DeviceTensor dEmbeddings) => BasicOps.Add(grad, dEmbeddings, grad);
    }

    /// <summary>The logits of sequences of equal length run as one batch, all rows after the first <paramref name="skip"/> of each, flattened.</summary>
    internal static float[] Logits(LlamaRunner runner, int[][] seqs, int skip)
    {
        int len = seqs[0].Length, rows = seqs.Length * len;
        runner.Ids.RowsView(0, rows).Upload<int>(seqs.SelectMany(x => x).ToArray());
        runner.Embed(rows);
        runner.Layers(seqs.Length, len);
        runner.FinalNorm(rows);
        var all = new List<float>();
        for (int b = 0; b < seqs.Length; b++)
            for (int r = skip; r < len; r++) all.AddRange(runner.LogitsOf(b * len + r, 1).ToArray<float>());
        return [.. all];
    }

    // P = 5 virtual rows before T = 67 tokens (not a multiple of 64), 3 sequences, width 13: every copy is an exact move,
    // and the backward's sum over sequences runs in sequence order, as the CPU sum below does: equality, not a tolerance.
    [Fact]
    public void VirtualTokenRowsMatchTheirCpuLayout()
    {
        const int p = 5, t = 67, batch = 3, dim = 13, s = p + t;
        var promptData = TestData.Uniform(p * dim, 1);
        var compactData = TestData.Uniform(batch * t * dim, 2);
        using var prompt = DeviceTensor.Create(Ctx, "test.prompt", DType.F32, [p, dim], MemoryCategory.Workspace);
        using var grad = DeviceTensor.Create(Ctx, "test.prompt_grad", DType.F32, [p, dim], MemoryCategory.Workspace);
        using var compact = Guarded.Create(Ctx, "test.compact", batch * t, dim);
        using var expanded = Guarded.Create(Ctx, "test.expanded", batch * s, dim);
        using var back = Guarded.Create(Ctx, "test.back", batch * t, dim);
        prompt.Upload<float>(promptData);
        compact.Upload(compactData);
        BasicOps.Fill(grad, 0);
        var hook = new SummingHook(prompt, grad);

        VirtualTokenRows.Scatter(hook, p, compact.Tensor, expanded.Tensor, batch, t);
        VirtualTokenRows.Gather(expanded.Tensor, back.Tensor, batch, t, p);
        VirtualTokenRows.Backward(hook, expanded.Tensor, batch);
        var got = expanded.Download();
        var expected = new float[batch * s * dim];
        for (int b = 0; b < batch; b++)
        {
            Array.Copy(promptData, 0, expected, b * s * dim, p * dim);
            Array.Copy(compactData, b * t * dim, expected, (b * s + p) * dim, t * dim);
        }
        Assert.Equal(expected, got);
        Assert.Equal(compactData, back.Download());
        var sum = new float[p * dim];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < p * dim; i++) sum[i] += got[b * s * dim + i];
        Assert.Equal(sum, grad.ToArray<float>());

        // Training's host layout: P placeholder slots (id 0, target −1) before each sequence's ids and targets.
        var (ids, targets) = VirtualTokenRows.Expand([1, 2, 3, 4, 5, 6], [2, 3, -1, 5, 6, 7], batch: 2, seqLen: 3, virtualTokens: 2);
        Assert.Equal(new[] { 0, 0, 1, 2, 3, 0, 0, 4, 5, 6 }, ids);
        Assert.Equal(new[] { -1, -1, 2, 3, -1, -1, -1, 5, 6, 7 }, targets);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PromptGradientsMatchFloat64FiniteDifferences(bool checkpointing)
    {
        var (c, w) = TinyModels.Random(13);
        var cfg = Config(3);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        var reference = TinyModels.DequantizedReference(model, c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        var tensor = p.ByName[PromptMethod.TensorName];
        Assert.Equal(new long[] { 3, c.Dim }, tensor.Shape);
        // N(0, 1) initialization, scaled down so the virtual rows stay in the range of the token embeddings.
        var values = TestData.Normal((int)tensor.Param.Count, 21, 0.5f);
        tensor.Param.Upload<float>(values);
        var host = values.Select(x => (double)x).ToArray();
        using var runtime = (PromptRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] tokens = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = tokens.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, tokens, 1f / n, seed: 1);

        reference.VirtualTokens = () => [.. Enumerable.Range(0, 3).Select(r => host.AsSpan(r * c.Dim, c.Dim).ToArray())];
        double Loss() => TinyModels.ReferenceLoss(reference, ids, tokens, seqLen: 5);
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - Loss()) < 1e-4, $"loss {gpuLoss / n} vs reference {Loss()}");
        var g = tensor.Grad!.ToArray<float>();
        Assert.True(g.Any(x => x != 0), "the prompt received no gradient");
        FiniteDifference.AssertMatches(PromptMethod.TensorName, g, host, Loss);
    }

    // The virtual rows are the embedding rows of u, at the positions u would have: every real row of [u; x] is computed from
    // the same values by the same kernels, so the logits agree to float32 rounding (1e-5 on logits of order 1, for a
    // different row count in the fused dispatches).
    [Fact]
    public void PromptOfRealTokenEmbeddingsEqualsPrependingThoseTokens()
    {
        var (c, w) = TinyModels.Random(17);
        int[] u = [1, 7, 20, 3];
        var cfg = Config(u.Length, PromptInit.Text, u);
        using var model = DeviceLlama.Load(Ctx, c, w, cfg.BaseQuant);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 1);
        cfg.Method.InitializeFromBase(p, model, cfg, seed: 1);
        using var runtime = (PromptRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 2 * 9);
        int[][] xs = [[1, 5, 9, 2, 30, 7, 4, 8, 8], [7, 3, 36, 0, 11, 2, 2, 6, 19]];

        float[] withPrompt, prepended;
        using (var runner = new LlamaRunner(model, 2, 9, kvCache: false, adapter: runtime)) withPrompt = Logits(runner, xs, 0);
        using (var runner = new LlamaRunner(model, 2, 13, kvCache: false)) prepended = Logits(runner, [.. xs.Select(x => u.Concat(x).ToArray())], u.Length);
        TestData.Close(prepended, withPrompt, 1e-5, 0, "logits with the prompt vs with its tokens prepended");
    }

    // Generation: the prompt's rows go into the KV cache once (prefill), later tokens sit at positions P + t. Greedy
    // continuation on an fp32 base against the float64 reference with the same virtual tokens.
    [Fact]
    public void GenerationHoldsThePromptInTheCacheAndMatchesTheReference()
    {
        var (c, w) = TinyModels.Random(19);
        var cfg = Config(6) with { BaseQuant = BaseQuant.None };
        using var model = DeviceLlama.Load(Ctx, c, w, BaseQuant.None);
        var reference = new VkPeft.Peft.Models.ReferenceForward(c, w);
        using var p = new TrainableParameters(Ctx, withOptimizer: false);
        cfg.Method.Initialize(p, c, cfg, seed: 5);
        var prompt = p.ByName[PromptMethod.TensorName].Param.ToArray<float>();
        reference.VirtualTokens = () => [.. Enumerable.Range(0, 6).Select(r => prompt.AsSpan(r * c.Dim, c.Dim).ToArray().Select(x => (double)x).ToArray())];
        using var runtime = (PromptRuntime)cfg.Method.CreateRuntime(Ctx, c, cfg, p, maxRows: 20);
        using var runner = new LlamaRunner(model, 1, 20, kvCache: true, adapter: runtime);
        var generated = new Generator(runner).Generate([1, 5, 9], 12, new SamplingOptions());
        Assert.Equal(reference.GenerateGreedy([1, 5, 9], 12), generated);
    }
}
