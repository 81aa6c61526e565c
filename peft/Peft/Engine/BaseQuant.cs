// How the frozen linear weights are held: none (fp32), nf4, nf4-dq, fp4, fp4-dq or int4 (QA-LoRA groups) with a block
// or group size — the quantization a run chooses, and what an adapter records it was trained against.
using VkPeft.Quant;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public sealed record BaseQuant(string Type, int Blocksize)
{
    public static readonly BaseQuant None = new("none", 0);

    /// <summary>The quantization types: none, nf4, nf4-dq, fp4, fp4-dq, int4.</summary>
    public static readonly IReadOnlyList<string> Types = ["none", "nf4", "nf4-dq", "fp4", "fp4-dq", "int4"];

    public bool IsQuantized => Type != "none";
    public bool IsInt4 => Type == "int4";
    public bool DoubleQuant => Type.EndsWith("-dq", StringComparison.Ordinal);
    public QuantType FourBitType => Type.StartsWith("fp4", StringComparison.Ordinal) ? QuantType.Fp4 : QuantType.Nf4;

    /// <summary>Parses a quantization type; blocksize defaults to 64 (NF4/FP4) or 32 (INT4 group size).</summary>
    public static BaseQuant Parse(string text, int? blocksize = null)
    {
        var t = text.Trim().ToLowerInvariant();
        if (!Types.Contains(t))
            throw new SettingException($"{EngineSettings.Quant}: unknown value '{text}' (use {string.Join(", ", Types)})");
        int bs = blocksize ?? (t == "int4" ? 32 : t == "none" ? 0 : 64);
        if (t is "nf4" or "nf4-dq" or "fp4" or "fp4-dq" && (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0))
            throw new FormatException($"block size {bs} is not one of 32, 64, …, 4096");
        if (t == "int4" && bs < 1) throw new SettingException($"{EngineSettings.GroupSize} must be positive, got {bs}");
        return new BaseQuant(t, bs);
    }

    public override string ToString() => IsQuantized ? $"{Type} (block {Blocksize})" : "none (fp32)";
}
