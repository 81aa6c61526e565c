// Every compute shader source has a GPU-vs-CPU test: this map names it (a new .comp without an entry fails here), and the
// benchmark shader gets its own check against the CPU.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class ShaderCoverageTests(GpuFixture gpu)
{
    /// <summary>Shader source → the test class that compares it with its CPU reference.</summary>
    public static readonly IReadOnlyDictionary<string, Type> CoveredBy = new Dictionary<string, Type>
    {
        ["fill.comp"] = typeof(BasicOpsTests), ["copy.comp"] = typeof(BasicOpsTests), ["elementwise.comp"] = typeof(BasicOpsTests),
        ["reduce_rows.comp"] = typeof(BasicOpsTests), ["softmax_rows.comp"] = typeof(BasicOpsTests),
        ["matmul.comp"] = typeof(MatMulTests), ["matmul_lanes.comp"] = typeof(MatMulTests), ["matmul_lanes_nn.comp"] = typeof(MatMulTests),
        ["dequant.comp"] = typeof(QuantizedKernelTests), ["embedding_dequant.comp"] = typeof(QuantizedKernelTests),
        ["absmax_blocks.comp"] = typeof(DeviceQuantizerTests), ["quantize_4bit.comp"] = typeof(DeviceQuantizerTests),
        ["embedding_forward.comp"] = typeof(Ops.LayerOpsTests), ["embedding_backward.comp"] = typeof(Ops.LayerOpsTests),
        ["rmsnorm_forward.comp"] = typeof(Ops.LayerOpsTests), ["rmsnorm_backward.comp"] = typeof(Ops.LayerOpsTests),
        ["rmsnorm_weight_grad.comp"] = typeof(Ops.LayerOpsTests), ["rope.comp"] = typeof(Ops.LayerOpsTests),
        ["swiglu.comp"] = typeof(Ops.LayerOpsTests), ["cross_entropy.comp"] = typeof(Ops.LayerOpsTests),
        ["adamw.comp"] = typeof(Ops.OptimizerOpsTests), ["axpy.comp"] = typeof(Ops.OptimizerOpsTests), ["sum_squares.comp"] = typeof(Ops.OptimizerOpsTests),
        ["attention_fwd.comp"] = typeof(Attention.AttentionTests), ["attention_bwd_dq.comp"] = typeof(Attention.AttentionTests),
        ["attention_bwd_dkv.comp"] = typeof(Attention.AttentionTests),
        ["attention_flash_fwd.comp"] = typeof(Attention.AttentionTests), ["attention_flash_bwd_dq.comp"] = typeof(Attention.AttentionTests),
        ["attention_flash_bwd_dkv.comp"] = typeof(Attention.AttentionTests), ["attention_paged.comp"] = typeof(Attention.PagedAttentionTests),
        ["matmul_tn.comp"] = typeof(PeftKernels.MatMulTnTests), ["dropout.comp"] = typeof(PeftKernels.PeftOpsTests),
        ["group_pool.comp"] = typeof(PeftKernels.PeftOpsTests), ["activation.comp"] = typeof(PeftKernels.PeftOpsTests),
        ["bias.comp"] = typeof(PeftKernels.PeftOpsTests), ["lora_gathered.comp"] = typeof(PeftKernels.GatheredLoraTests),
        ["splitk_sum.comp"] = typeof(SplitKTests),
        ["dora.comp"] = typeof(PeftKernels.DoraKernelTests),
        ["adaption_prompt_fwd.comp"] = typeof(PeftKernels.AdaptionPromptKernelTests), ["adaption_prompt_bwd.comp"] = typeof(PeftKernels.AdaptionPromptKernelTests),
        ["bench_fma.comp"] = typeof(ShaderCoverageTests),
    };

    [Fact]
    public void EveryShaderSourceHasATest()
    {
        var sources = ShaderCatalog.All.Select(s => s.Source).Distinct().ToArray();
        var missing = sources.Where(s => !CoveredBy.ContainsKey(s)).ToArray();
        Assert.True(missing.Length == 0, "shaders without a named GPU-vs-CPU test: " + string.Join(", ", missing));
        Assert.All(CoveredBy.Values, t => Assert.Contains(t.GetMethods(), m => m.GetCustomAttributes(typeof(FactAttribute), true).Length > 0));
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct FmaPush { public uint Iterations, GroupsX; public float Seed; }

    /// <summary>The FMA-peak benchmark computes what its header says (so its FLOP count is honest).</summary>
    [Fact]
    public void BenchFmaComputesItsChains()
    {
        var ctx = gpu.Context;
        const int n = 512;
        const uint iterations = 5;
        using var o = DeviceTensor.Create(ctx, "fma", DType.F32, [n], MemoryCategory.Workspace);
        ctx.Commands.Dispatch(ctx.Pipelines.Get(ShaderId.BenchFma, 256), [Binding.Write(o.Range)], new FmaPush { Iterations = iterations, GroupsX = 2, Seed = 0.5f }, 2);
        var got = o.ToArray<float>();
        float[] m = [0.999999f, 1.000001f, 0.9999995f, 1.0000005f];
        for (int i = 0; i < n; i += 37)
        {
            var s = new double[4];
            for (int j = 0; j < 16; j++)
                for (int c = 0; c < 4; c++)
                {
                    double a = 0.5f + i * 1e-7f + j;
                    for (int it = 0; it < iterations; it++) a = a * m[c] + 1e-7;
                    s[c] += a;
                }
            double expected = s[0] + s[1] + s[2] + s[3];
            // 16 chains of 5 fp32 FMAs and 64 fp32 additions of values near 8: relative error well under 1e-5.
            Assert.InRange(got[i], expected * (1 - 1e-5), expected * (1 + 1e-5));
        }
    }
}
