// End-to-end finite-difference gradient checks of LoRA, LoRA-FA (A frozen) and QA-LoRA through a whole tiny model with
// a quantized base: GPU gradients of every A and B against float64 central differences of the reference forward with
// the adapter hooked in.
using AttentionKernel = VkPeft.Runtime.Kernels.Attention;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
public sealed class LoraGradientTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    internal static TargetModule ToTarget(LlamaTensorKind k) => k.ToTarget()!.Value;

    [Theory]
    [InlineData("lora", "nf4-dq", false)]
    [InlineData("lora", "none", true)]
    [InlineData("qalora", "int4", false)]
    [InlineData("lora", "nf4-dq", true, true)]
    [InlineData("qalora", "int4", true, true)]
    [InlineData("lora", "nf4-dq", true, false, AttentionAlgorithm.Flash)]   // the GPU attention kernels through the whole model
    [InlineData("lora", "nf4-dq", false, false, AttentionAlgorithm.Auto, true)]
    [InlineData("lora", "nf4-dq", true, false, AttentionAlgorithm.Auto, true)]
    public void AdapterGradientsMatchFloat64FiniteDifferences(string method, string quant, bool checkpointing, bool offload = false,
        AttentionAlgorithm attention = AttentionAlgorithm.Auto, bool freezeA = false)
    {
        using var forced = attention == AttentionAlgorithm.Auto ? null : AttentionKernel.Force(Ctx, attention);
        var (c, w) = TinyModels.Random(11);
        var bq = BaseQuant.Parse(quant, quant == "int4" ? 8 : null);
        var cfg = new AdapterConfig
        {
            Method = method == "qalora" ? PeftMethod.QaLora : PeftMethod.Lora,
            Settings = (method == "qalora" ? new QaLoraSettings { GroupSize = 8 } : new LoraSettings()) with { Rank = 2, Alpha = 3, FreezeA = freezeA },
            BaseQuant = bq,
        };
        using var model = DeviceLlama.Load(Ctx, c, w, bq);
        var reference = TinyModels.DequantizedReference(model, c, w);

        using var p = new TrainableParameters(Ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        // B starts at zero in training; give it values so that every gradient is non-trivial.
        var host = new Dictionary<string, double[]>();
        int s = 100;
        foreach (var (name, t) in p.ByName)
        {
            var v = name.EndsWith("lora_b", StringComparison.Ordinal) ? TestData.Normal((int)t.Param.Count, s++, 0.3f) : t.Param.ToArray<float>();
            t.Param.Upload<float>(v);
            host[name] = v.Select(x => (double)x).ToArray();
        }
        using var lora = new LoraRuntime(Ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, lora, batch: 2, seqLen: 5, checkpointing, offloadCheckpoints: offload);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] targets = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];   // one masked position
        int n = targets.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, targets, 1f / n, seed: 1);

        // Reference: mean loss over predicted tokens with y += s·B·A·x̃ (x̃ = group means for QA-LoRA).
        reference.AfterLinear = (l, kind, x, y) =>
        {
            var t = ToTarget(kind);
            var A = host[AdapterWeights.LoraA(l, t)];
            var B = host[AdapterWeights.LoraB(l, t)];
            double[] src = x;
            if (cfg.Method == PeftMethod.QaLora)
            {
                int g = cfg.SettingsOf<QaLoraSettings>().GroupSize;
                src = new double[x.Length / g];
                for (int i = 0; i < x.Length; i++) src[i / g] += x[i] / g;
            }
            int r = cfg.SettingsOf<LoraSettings>().Rank;
            var ax = new double[r];
            for (int j = 0; j < r; j++) for (int i = 0; i < src.Length; i++) ax[j] += A[j * src.Length + i] * src[i];
            for (int o = 0; o < y.Length; o++) for (int j = 0; j < r; j++) y[o] += cfg.SettingsOf<LoraSettings>().Scaling * B[o * r + j] * ax[j];
        };
        double Loss() => TinyModels.ReferenceLoss(reference, ids, targets, seqLen: 5);
        double refLoss = Loss();
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");

        foreach (var (name, t) in p.ByName)
        {
            // LoRA-FA: A has neither gradient nor optimizer state; B's gradient is checked like LoRA's.
            bool isA = name.EndsWith("lora_a", StringComparison.Ordinal);
            Assert.Equal(freezeA && isA, t.Grad == null);
            Assert.Equal(freezeA && isA, t.M == null);
            if (t.Grad == null) continue;
            FiniteDifference.AssertGradient(name, t.Grad, host[name], Loss);
        }
    }
}
