// The settings of the base model's quantization and of sampling as errors name them (see SettingException): library code
// says which setting is wrong, and a front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

/// <summary>The settings of <see cref="BaseQuant"/> and <see cref="SamplingOptions"/> that errors name.</summary>
public static class EngineSettings
{
    /// <summary>The base quantization type (none, nf4, nf4-dq, fp4, fp4-dq, int4).</summary>
    public static readonly Setting Quant = Setting.Of<BaseQuant>(nameof(BaseQuant.Type));
    /// <summary>An INT4 base's group size (its <see cref="BaseQuant.Blocksize"/>).</summary>
    public static readonly Setting GroupSize = Setting.Of<BaseQuant>("GroupSize");
    /// <summary>An adapter applied at run time (generation and serving).</summary>
    public static readonly Setting Adapter = new("Adapter", "Path");
    public static readonly Setting Temperature = Setting.Of<SamplingOptions>(nameof(SamplingOptions.Temperature));
    public static readonly Setting TopP = Setting.Of<SamplingOptions>(nameof(SamplingOptions.TopP));
}
