// How the frozen linear weights are held: none (fp32), nf4, nf4-dq, fp4, fp4-dq or int4 (QA-LoRA groups) with a block
// or group size — the --quant choice, and what an adapter records it was trained against.
using VkPeft.Quant;

namespace VkPeft.Peft.Engine;

public sealed record BaseQuant(string Type, int Blocksize)
{
    public static readonly BaseQuant None = new("none", 0);

    /// <summary>Quant types accepted by --quant: none, nf4, nf4-dq, fp4, fp4-dq, int4.</summary>
    public static readonly IReadOnlyList<string> Types = ["none", "nf4", "nf4-dq", "fp4", "fp4-dq", "int4"];

    public bool IsQuantized => Type != "none";
    public bool IsInt4 => Type == "int4";
    public bool DoubleQuant => Type.EndsWith("-dq", StringComparison.Ordinal);
    public QuantType FourBitType => Type.StartsWith("fp4", StringComparison.Ordinal) ? QuantType.Fp4 : QuantType.Nf4;

    /// <summary>Parses a --quant value; blocksize defaults to 64 (NF4/FP4) or 32 (INT4 group size).</summary>
    public static BaseQuant Parse(string text, int? blocksize = null)
    {
        var t = text.Trim().ToLowerInvariant();
        if (!Types.Contains(t))
            throw new FormatException($"--quant: unknown value '{text}' (use {string.Join(", ", Types)})");
        int bs = blocksize ?? (t == "int4" ? 32 : t == "none" ? 0 : 64);
        if (t is "nf4" or "nf4-dq" or "fp4" or "fp4-dq" && (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0))
            throw new FormatException($"block size {bs} is not one of 32, 64, …, 4096");
        if (t == "int4" && bs < 1) throw new FormatException($"--group-size must be positive, got {bs}");
        return new BaseQuant(t, bs);
    }

    public override string ToString() => IsQuantized ? $"{Type} (block {Blocksize})" : "none (fp32)";
}
