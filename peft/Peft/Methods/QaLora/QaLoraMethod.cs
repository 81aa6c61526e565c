// QA-LoRA as one method: LoRA whose branch input is the mean of each group of g inputs (pooling constant c = 1/g), so A
// is [r, in/g] and ΔW is constant within each INT4 group — trained against an INT4 group-quantized base with the same g,
// mergeable losslessly into its group minima. Shares LoRA's runtime, options and spec shape.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;

namespace VkPeft.Peft.Methods.QaLora;

public sealed class QaLoraMethod : LoraMethod
{
    public override string Name => "qa-lora";

    public override string CliName => "qalora";

    public override bool GroupPooled => true;

    /// <summary>An INT4 base in groups of <paramref name="groupSize"/> (default 32).</summary>
    public override BaseQuant DefaultQuant(int? groupSize) => BaseQuant.Parse("int4", groupSize ?? 32);

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        base.ValidateOptions(a, quant);
        if (!quant.IsInt4) throw new FormatException("--method qalora trains against an INT4 group-quantized base: use --quant int4");
        if (a.GroupSize != quant.Blocksize) throw new FormatException($"QA-LoRA's group size ({a.GroupSize}) must equal the INT4 base's ({quant.Blocksize})");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        base.ValidateConfig(a, baseConfig, source);
        foreach (var t in a.Targets)
        {
            int inF = baseConfig.LinearShape(t).In;
            if (a.GroupSize <= 0 || inF % a.GroupSize != 0)
                throw new ModelFormatException(source, "group_size", $"QA-LoRA group size {a.GroupSize} does not divide in_features {inF} of {AdapterConfig.HfName(t)}");
        }
    }

    /// <summary>
    /// Into INT4 safetensors, or GGUF Q4_1 with groups of 32, from the INT4 base the adapter was trained against:
    /// <see cref="QaLoraMerge.MergeInt4"/>.
    /// </summary>
    public override MergedModel? LosslessMerge(LlamaConfig c, LlamaWeights weights, AdapterWeights adapter, ExportFormat format, ExportDType dtype,
        MergeFrom from, ICollection<string>? notes)
    {
        var cfg = adapter.Config;
        bool int4Base = cfg.BaseQuant.Type == "int4" && cfg.BaseQuant.Blocksize == cfg.GroupSize;
        bool lossless = int4Base && from == MergeFrom.Dequantized
            && ((format == ExportFormat.Safetensors && dtype == ExportDType.Int4) || (format == ExportFormat.Gguf && dtype == ExportDType.Q4_1 && cfg.GroupSize == 32));
        if (!lossless) return null;
        notes?.Add($"QA-LoRA merged losslessly into INT4 groups of {cfg.GroupSize}: codes and scales unchanged, mins shifted by ΔW");
        return QaLoraMerge.MergeInt4(c, weights, adapter);
    }

    /// <summary>A' = c·A expanded over each group (<see cref="QaLoraMerge.ExpandToLora"/>): exact when g is a power of two.</summary>
    public override AdapterWeights? AsPlainLora(AdapterWeights adapter, LlamaConfig c, ICollection<string>? notes)
    {
        int g = adapter.Config.GroupSize;
        notes?.Add(int.IsPow2(g)
            ? $"QA-LoRA written as the equivalent plain LoRA (A expanded over groups of {g}, times 1/{g}: exact)"
            : $"QA-LoRA written as the equivalent plain LoRA (A expanded and times 1/{g}, rounded to float32)");
        return QaLoraMerge.ExpandToLora(adapter, c);
    }

    public override AdapterConfig ConfigFor(Planning.TrainSetup s) => base.ConfigFor(s) with { GroupSize = s.GroupSize };
}
