// QA-LoRA's merge rules beyond the dense ΔW: the update per INT4 group, the lossless merge into the INT4 base's group
// minima (codes and scales unchanged), and the equivalent plain LoRA (A expanded over each group) for formats that hold
// LoRA only.
using VkPeft.Peft.Export;
using VkPeft.Peft.Models;
using VkPeft.Quant;

namespace VkPeft.Peft.Methods.QaLora;

public static class QaLoraMerge
{
    /// <summary>
    /// QA-LoRA ΔW per group [out, in/g] in float64: <c>s·c·(B·A)</c>. The dense ΔW is this value repeated over each group.
    /// </summary>
    public static double[] GroupDelta(AdapterWeights adapter, LlamaConfig baseConfig, int layer, TargetModule t)
    {
        if (adapter.Config.Method is not QaLoraMethod) throw new InvalidOperationException("not a QA-LoRA adapter");
        var (outF, inF) = baseConfig.LinearShape(t);
        int g = adapter.Config.SettingsOf<QaLoraSettings>().GroupSize, groups = inF / g;
        var dense = AdapterMerge.Delta(adapter, baseConfig, layer, t);
        var result = new double[(long)outF * groups];
        for (int o = 0; o < outF; o++)
            for (int k = 0; k < groups; k++) result[o * groups + k] = dense[o * inF + k * g];
        return result;
    }

    /// <summary>
    /// Lossless QA-LoRA merge (paper §3.3 with float zero points): every linear weight is INT4-quantized in groups of
    /// g (the base the adapter was trained against); for a target, ΔW is constant within each group, so only the
    /// group minimum shifts, <c>min' = min + ΔW[o, group]</c> (float64 sum rounded to float32); codes and scales are
    /// unchanged. The float weights of the result are the dequantized merged INT4 weights.
    /// </summary>
    public static MergedModel MergeInt4(LlamaConfig config, LlamaWeights weights, AdapterWeights adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var cfg = adapter.Config;
        if (cfg.Method is not QaLoraMethod) throw new ArgumentException("the lossless INT4 merge needs a QA-LoRA adapter", nameof(adapter));
        int g = cfg.SettingsOf<QaLoraSettings>().GroupSize;
        if (cfg.BaseQuant.Type != "int4" || cfg.BaseQuant.Blocksize != g)
            throw new ExportException($"QA-LoRA lossless merge needs an int4 base with group size {g}; the adapter records base quantization {cfg.BaseQuant.Type}/{cfg.BaseQuant.Blocksize}");
        AdapterMerge.Validate(adapter, config, "adapter");
        var targets = cfg.Targets.ToHashSet();
        var int4 = new Dictionary<(int, TargetModule), Int4GroupQuantized>();
        var merged = ModelTensors.WithLinears(weights, (layer, t, w) =>
        {
            var (outF, inF) = config.LinearShape(t);
            var q = Int4GroupCodec.Quantize(w, outF, inF, g, $"layers.{layer}.{AdapterWeights.TargetName(t)}");
            if (targets.Contains(t))
            {
                var groupDelta = GroupDelta(adapter, config, layer, t);
                var mins = new float[q.Mins.Length];
                for (int k = 0; k < mins.Length; k++) mins[k] = (float)(q.Mins[k] + groupDelta[k]);
                q = q with { Mins = mins };
            }
            int4[(layer, t)] = q;
            var dense = new float[q.Count];
            Int4GroupCodec.Dequantize(q, dense);
            return dense;
        });
        return new MergedModel(config, merged, int4);
    }

    /// <summary>
    /// A QA-LoRA adapter as an equivalent plain LoRA: <c>A'[k, i] = c·A[k, i/g]</c> (c = 1/g), same B, rank and scaling.
    /// Exact when g is a power of two (c·A is then an exact float32 product).
    /// </summary>
    public static AdapterWeights ExpandToLora(AdapterWeights adapter, LlamaConfig baseConfig)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        var cfg = adapter.Config;
        if (cfg.Method is not QaLoraMethod) return adapter;
        var result = new AdapterWeights(cfg with { Method = PeftMethod.Lora });
        var pooling = cfg.SettingsOf<QaLoraSettings>();
        int g = pooling.GroupSize;
        float c = pooling.PoolingConstant;
        foreach (var (name, tensor) in adapter.Tensors)
        {
            if (!name.EndsWith(".lora_a", StringComparison.Ordinal))
            {
                result.Tensors[name] = tensor;
                continue;
            }
            int r = (int)tensor.Shape[0], groups = (int)tensor.Shape[1], inF = groups * g;
            var a = new float[(long)r * inF];
            for (int k = 0; k < r; k++)
                for (int i = 0; i < inF; i++) a[k * inF + i] = c * tensor.Data[k * groups + i / g];
            result.Tensors[name] = new HostTensor(a, [r, inF]);
        }
        AdapterMerge.Validate(result, baseConfig, "expanded QA-LoRA adapter");
        return result;
    }
}
