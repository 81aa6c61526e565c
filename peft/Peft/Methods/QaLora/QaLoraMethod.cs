// QA-LoRA as one method: LoRA whose branch input is the mean of each group of g inputs (pooling constant c = 1/g), so A
// is [r, in/g] and ΔW is constant within each INT4 group — trained against an INT4 group-quantized base with the same g,
// mergeable losslessly into its group minima. Shares LoRA's runtime, options and spec shape.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.QaLora;

/// <summary>QA-LoRA's configuration: LoRA's plus the group size g (the INT4 base's), over whose inputs the branch input is averaged.</summary>
public sealed record QaLoraSettings : LoraSettings
{
    /// <summary>The group size of an adapter file that records none, and of a base that is not INT4.</summary>
    public const int DefaultGroupSize = 32;

    public int GroupSize { get; init; } = DefaultGroupSize;

    /// <summary>Pooling constant c: the LoRA input is c·Σ over a group of g inputs, c = 1/g (average pooling).</summary>
    public float PoolingConstant => 1f / GroupSize;
}

public sealed class QaLoraMethod : LoraMethod
{
    public override string Name => "qa-lora";

    public override string CliName => "qalora";

    public override bool GroupPooled => true;

    /// <summary>An INT4 base in groups of <paramref name="groupSize"/> (default 32).</summary>
    public override BaseQuant DefaultQuant(int? groupSize) => BaseQuant.Parse("int4", groupSize ?? 32);

    /// <summary>Groups of the INT4 base's size (<see cref="QaLoraSettings.DefaultGroupSize"/> on any other base).</summary>
    public override MethodSettings? DefaultSettings(BaseQuant quant) =>
        new QaLoraSettings { GroupSize = quant.IsInt4 ? quant.Blocksize : QaLoraSettings.DefaultGroupSize };

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        base.ValidateOptions(a, quant);
        if (!quant.IsInt4) throw new SettingException($"{AdapterSettings.Method} qalora trains against an INT4 group-quantized base: use {EngineSettings.Quant} int4");
        int g = a.SettingsOf<QaLoraSettings>().GroupSize;
        if (g != quant.Blocksize) throw new FormatException($"QA-LoRA's group size ({g}) must equal the INT4 base's ({quant.Blocksize})");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        base.ValidateConfig(a, baseConfig, source);
        int g = a.SettingsOf<QaLoraSettings>().GroupSize;
        foreach (var t in a.Targets)
        {
            int inF = baseConfig.LinearShape(t).In;
            if (g <= 0 || inF % g != 0)
                throw new ModelFormatException(source, "group_size", $"QA-LoRA group size {g} does not divide in_features {inF} of {AdapterConfig.HfName(t)}");
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
        int g = cfg.SettingsOf<QaLoraSettings>().GroupSize;
        bool int4Base = cfg.BaseQuant.Type == "int4" && cfg.BaseQuant.Blocksize == g;
        bool lossless = int4Base && from == MergeFrom.Dequantized
            && ((format == ExportFormat.Safetensors && dtype == ExportDType.Int4) || (format == ExportFormat.Gguf && dtype == ExportDType.Q4_1 && g == 32));
        if (!lossless) return null;
        notes?.Add($"QA-LoRA merged losslessly into INT4 groups of {g}: codes and scales unchanged, mins shifted by ΔW");
        return QaLoraMerge.MergeInt4(c, weights, adapter);
    }

    /// <summary>A' = c·A expanded over each group (<see cref="QaLoraMerge.ExpandToLora"/>): exact when g is a power of two.</summary>
    public override AdapterWeights? AsPlainLora(AdapterWeights adapter, LlamaConfig c, ICollection<string>? notes)
    {
        int g = adapter.Config.SettingsOf<QaLoraSettings>().GroupSize;
        notes?.Add(int.IsPow2(g)
            ? $"QA-LoRA written as the equivalent plain LoRA (A expanded over groups of {g}, times 1/{g}: exact)"
            : $"QA-LoRA written as the equivalent plain LoRA (A expanded and times 1/{g}, rounded to float32)");
        return QaLoraMerge.ExpandToLora(adapter, c);
    }

    /// <summary>LoRA's planned settings in groups of the planner's group size (<see cref="Planning.TrainSetup.Settings"/> wins when it is QA-LoRA's).</summary>
    public override AdapterConfig ConfigFor(Planning.TrainSetup s) => base.ConfigFor(s) with
    {
        Settings = s.Settings as QaLoraSettings ?? PlannedSettings(s, new QaLoraSettings { GroupSize = s.GroupSize }),
    };

    public override Planning.TrainSetup SetupFor(Planning.TrainSetup s, AdapterConfig a) =>
        base.SetupFor(s, a) with { GroupSize = a.SettingsOf<QaLoraSettings>().GroupSize };
}
