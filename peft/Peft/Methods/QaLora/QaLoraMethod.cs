// QA-LoRA as one method: LoRA whose branch input is the mean of each group of g inputs (pooling constant c = 1/g), so A
// is [r, in/g] and ΔW is constant within each INT4 group — trained against an INT4 group-quantized base with the same g,
// mergeable losslessly into its group minima. Shares LoRA's runtime, options and spec shape.
using VkPeft.Peft.Engine;
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

    public override AdapterConfig ConfigFor(Planning.TrainSetup s) => base.ConfigFor(s) with { GroupSize = s.GroupSize };
}
