// Adapter validation against a base config (from the method's parameter spec), the dense merge by the method's rule the base weights an adapter was
// trained against (quantize→dequantize with BaseQuant), dense merges and the lossless QA-LoRA INT4 merge.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Quant;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Export;

/// <summary>Which base weights a LoRA update is added to.</summary>
public enum MergeFrom
{
    /// <summary>The weights the adapter was trained against: the base quantized with its BaseQuant, dequantized.</summary>
    Dequantized,

    /// <summary>The original (un-quantized) base weights.</summary>
    Original,
}

/// <summary>A model to be written: float32 weights and, for INT4 exports, the per-linear INT4 form they dequantize from.</summary>
public sealed record MergedModel(LlamaConfig Config, LlamaWeights Weights, Dictionary<(int Layer, TargetModule Kind), Int4GroupQuantized>? Int4 = null);

public static class AdapterMerge
{
    /// <summary>
    /// Checks every tensor an adapter must have for <paramref name="baseConfig"/> — its method's parameter spec: names,
    /// layer count and shapes — after the method's own config checks, and that no tensor names an unknown layer, target
    /// or part. Throws <see cref="ModelFormatException"/> naming <paramref name="source"/> and the field or tensor.
    /// </summary>
    public static void Validate(AdapterWeights adapter, LlamaConfig baseConfig, string source)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(baseConfig);
        var cfg = adapter.Config;
        cfg.Method.ValidateConfig(cfg, baseConfig, source);
        var expected = cfg.Method.Parameters(baseConfig, cfg).ToDictionary(p => p.Name, p => p.Shape, StringComparer.Ordinal);
        foreach (var (name, shape) in expected)
        {
            if (!adapter.Tensors.TryGetValue(name, out var tensor))
                throw new ModelFormatException(source, name, $"missing tensor (the base model has {baseConfig.NLayers} layers; the adapter's targets need it)");
            if (!tensor.Shape.SequenceEqual(shape))
                throw new ModelFormatException(source, name,
                    $"shape [{string.Join(", ", tensor.Shape)}] does not match the base model, which needs [{string.Join(", ", shape)}]");
            if (tensor.Data.LongLength != tensor.Count)
                throw new ModelFormatException(source, name, $"holds {tensor.Data.LongLength} values for shape [{string.Join(", ", tensor.Shape)}]");
        }
        foreach (var name in adapter.Tensors.Keys)
            if (!expected.ContainsKey(name))
                throw new ModelFormatException(source, name,
                    "unexpected tensor: names a layer the base model does not have, a target not in the adapter's targets, or an unknown part");
    }

    /// <summary>ΔW [out, in] in float64 of a LoRA or QA-LoRA target (see <see cref="LoraMethod.Delta"/>).</summary>
    public static double[] Delta(AdapterWeights adapter, LlamaConfig baseConfig, int layer, TargetModule t) =>
        adapter.Config.Method is LoraMethod lora ? lora.Delta(adapter, baseConfig, layer, t)
            : throw new InvalidOperationException($"{adapter.Config.Method} adapters have no low-rank update");

    /// <summary>
    /// The base linear weight an adapter trained with <paramref name="quant"/> saw: quantized then dequantized
    /// (nf4/fp4 with blocksize, ±double quant; int4 groups of blocksize), or the weight itself for "none".
    /// </summary>
    public static float[] TrainedBase(BaseQuant quant, float[] weight, int outF, int inF, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(quant);
        return quant.Type switch
        {
            "none" => weight,
            "nf4" => QuantizedLinearWeight.Bnb4Bit(weight, outF, inF, QuantType.Nf4, quant.Blocksize, false, tensorName).Dequantize(),
            "nf4-dq" => QuantizedLinearWeight.Bnb4Bit(weight, outF, inF, QuantType.Nf4, quant.Blocksize, true, tensorName).Dequantize(),
            "fp4" => QuantizedLinearWeight.Bnb4Bit(weight, outF, inF, QuantType.Fp4, quant.Blocksize, false, tensorName).Dequantize(),
            "fp4-dq" => QuantizedLinearWeight.Bnb4Bit(weight, outF, inF, QuantType.Fp4, quant.Blocksize, true, tensorName).Dequantize(),
            "int4" => QuantizedLinearWeight.Int4Group(weight, outF, inF, quant.Blocksize, tensorName).Dequantize(),
            _ => throw new ArgumentException($"unknown base quantization '{quant.Type}' (known: {string.Join(", ", BaseQuant.Types)})", nameof(quant)),
        };
    }

    /// <summary>
    /// Dense merge in the base layout: every linear weight becomes <c>base + ΔW</c> (float64 sum rounded once to
    /// float32), where base is <see cref="TrainedBase"/> (MergeFrom.Dequantized, all seven linear kinds, since
    /// training quantizes all of them) or the original weight. Without an adapter it returns the chosen base.
    /// A method without a merge rule (bottleneck adapters: a nonlinearity) is refused with its reason.
    /// </summary>
    public static MergedModel MergeDense(LlamaConfig config, LlamaWeights weights, AdapterWeights? adapter, MergeFrom from)
    {
        if (adapter is null) return new MergedModel(config, weights);
        var method = adapter.Config.Method;
        if (method.NotMergeableReason is { } why) throw new ExportException(why);
        Validate(adapter, config, "adapter");
        var merged = ModelTensors.WithLinears(weights, (layer, t, w) =>
        {
            var (outF, inF) = config.LinearShape(t);
            float[] baseW = from == MergeFrom.Dequantized
                ? TrainedBase(adapter.Config.BaseQuant, w, outF, inF, $"layers.{layer}.{AdapterWeights.TargetName(t)}")
                : w;
            if (method.MergeDelta(adapter, config, layer, t, baseW) is not { } delta) return baseW;
            var result = new float[baseW.Length];
            for (int i = 0; i < result.Length; i++) result[i] = (float)(baseW[i] + delta[i]);
            return result;
        });
        return method.MergeOther(new MergedModel(config, merged), adapter);
    }
}

/// <summary>An export request that cannot be carried out (existing output, unmergeable adapter, unsupported combination).</summary>
public sealed class ExportException : Exception, ISettingError
{
    private readonly SettingMessage? _detail;

    public ExportException(string message) : base(message) { }

    /// <summary>A refusal whose message names settings (the command line spells them as flags).</summary>
    public ExportException(SettingMessage detail) : base(detail.ToString()) => _detail = detail;

    public ExportException(string message, Exception inner) : base(message, inner) { }
    public ExportException() : this("export failed") { }

    /// <summary>The message with the settings it names (the message itself when it names none).</summary>
    public SettingMessage Detail => _detail ?? SettingMessage.Plain(Message);
}
