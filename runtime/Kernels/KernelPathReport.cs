// Which kernel path each op uses on this device and why (for `vkpeft info`): the matmul algorithm and tile shape, the
// fused 4-bit GEMM's weight-tile type and cooperative matrices, the attention algorithm and its cooperative matrices
// (self-checked fast variants), and why they are absent.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

public static class KernelPathReport
{
    private static string AttentionName(AttentionAlgorithm a) => a switch
    {
        AttentionAlgorithm.Direct => "direct (one row per invocation, workgroup-uniform loads)",
        AttentionAlgorithm.Shared => "shared (one row per invocation, blocks staged in shared memory)",
        AttentionAlgorithm.Flash => "flash (FlashAttention-2 style 16-row tiles)",
        var other => other.ToString(),
    };

    public static IReadOnlyList<KernelPathChoice> Describe(VulkanContext ctx)
    {
        var caps = ctx.Caps;
        var list = new List<KernelPathChoice>();
        bool lanes = MatMul.Choose(ctx) == MatMulAlgorithm.Lanes;
        var tiles = MatMulTiles.For(caps, fp16B: false);
        list.Add(lanes
            ? new("matmul fp32", "lanes (subgroup-broadcast register blocking)", "CPU device with 8-lane subgroups and broadcast: shared memory and barriers are expensive there")
            : new("matmul fp32", $"shared tiles {tiles.Name}", $"first entry of the tile table for a {caps.Kind} device within {caps.MaxComputeSharedMemorySize} bytes of shared memory"));
        if (lanes)
        {
            list.Add(new("fused 4-bit matmul", "lanes, whole code words, 16-row tiles (8-16 rows by M for the input gradient)", "CPU device: each lane decodes its code words once per tile in registers"));
            list.Add(new("fused 4-bit matmul weight tiles", "none (lanes keep decoded weights in registers)", $"{QuantizedMatMul.Fp16Tiles.Fast} apply to the shared-tiles algorithm only"));
        }
        else
        {
            var choice = ctx.Kernels.Describe(QuantizedMatMul.Fp16Tiles);
            var t = MatMulTiles.For(caps, choice.Path == QuantizedMatMul.Fp16Tiles.Fast);
            list.Add(new("fused 4-bit matmul", $"shared tiles {t.Name}, code words decoded once per tile", "GPU device"));
            list.Add(choice with { Op = "fused 4-bit matmul weight tiles" });
        }
        const string noKhr = "VK_KHR_cooperative_matrix (AMD, Intel) variants are not built: they need GL_KHR_cooperative_matrix, "
            + "which the glslc in our package registries (Debian 12 shaderc) does not compile";
        var nv = QuantizedMatMul.CoopMatrixUnavailable(caps);
        foreach (var (op, kernel) in new[] { ("cooperative matrices (forward)", QuantizedMatMul.CoopMatrix), ("cooperative matrices (input gradient)", QuantizedMatMul.CoopMatrixInputGrad) })
        {
            if (nv != null || lanes)
                list.Add(new(op, "not used", (nv ?? "the lanes algorithm runs on this device") + "; " + noKhr));
            else
            {
                var choice = ctx.Kernels.Describe(kernel);
                list.Add(new(op, choice.Path, choice.Why + "; " + noKhr, choice.Reason is { } r ? new SettingMessage($"{r}; {noKhr}") : null));
            }
        }

        var fwd = Attention.Choose(ctx);
        var bwd = Attention.Choose(ctx, backward: true);
        list.Add(new("attention", fwd == bwd ? AttentionName(fwd) : $"forward {AttentionName(fwd)}, backward {AttentionName(bwd)}", Attention.WhyChosen(ctx)));
        var coopWhy = Attention.CoopMatrixUnavailable(caps);
        if (coopWhy == null && fwd != AttentionAlgorithm.Flash && bwd != AttentionAlgorithm.Flash) coopWhy = "the flash kernels do not run on this device";
        if (coopWhy != null)
            list.Add(new("attention cooperative matrices", "not used", coopWhy + "; " + noKhr));
        else
        {
            var choice = ctx.Kernels.Describe(Attention.CoopMatrix);
            list.Add(new("attention cooperative matrices", choice.Path, choice.Why + "; " + noKhr));
        }
        return list;
    }
}
