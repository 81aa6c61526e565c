// What a trainable adapter is: the PEFT method, its hyperparameters, which linear layers it targets, and the base
// quantization it was trained against (so generate/eval can rebuild the same base).
using VkPeft.Peft.Engine;

namespace VkPeft.Peft.Methods;

/// <summary>The seven linear weight kinds of a Llama layer an adapter may target.</summary>
public enum TargetModule { Q, K, V, O, Gate, Up, Down }

/// <summary>Bottleneck adapter placement: Houlsby (serial, after attention and after the MLP) or parallel to the MLP.</summary>
public enum BottleneckKind { Houlsby, Parallel }

public enum BottleneckActivation { Relu, Silu, Gelu }

public sealed record AdapterConfig
{
    /// <summary>The PEFT method (see <see cref="PeftMethods"/>).</summary>
    public required PeftMethod Method { get; init; }
    /// <summary>LoRA / QA-LoRA rank r.</summary>
    public int Rank { get; init; } = 8;
    public float Alpha { get; init; } = 16;
    public float Dropout { get; init; }
    public bool UseRsLora { get; init; }
    /// <summary>LoRA-FA: A stays at its initialization (no gradient, no optimizer state); only B trains.</summary>
    public bool FreezeA { get; init; }
    public TargetModule[] Targets { get; init; } = Enum.GetValues<TargetModule>();
    /// <summary>QA-LoRA group size g (the INT4 base's group size); the LoRA input is the mean of each group of g inputs.</summary>
    public int GroupSize { get; init; } = 32;
    public BottleneckKind BottleneckKind { get; init; } = BottleneckKind.Houlsby;
    public int Bottleneck { get; init; } = 16;
    public BottleneckActivation Activation { get; init; } = BottleneckActivation.Silu;
    /// <summary>Parallel adapter output scale s (He et al. use 4.0).</summary>
    public float AdapterScale { get; init; } = 4f;
    /// <summary>The method's own configuration record, for methods that define one.</summary>
    public MethodSettings? Settings { get; init; }
    /// <summary>How the frozen base weights were held while training (recorded with the adapter).</summary>
    public required BaseQuant BaseQuant { get; init; }
    /// <summary>Path or name of the base model the adapter was trained on.</summary>
    public string BaseModel { get; init; } = "";

    /// <summary>LoRA scaling: alpha/r, or alpha/√r with rsLoRA.</summary>
    public float Scaling => UseRsLora ? Alpha / MathF.Sqrt(Rank) : Alpha / Rank;

    /// <summary>QA-LoRA pooling constant c: the LoRA input is c·Σ over a group of g inputs, c = 1/g (average pooling).</summary>
    public float PoolingConstant => 1f / GroupSize;

    /// <summary>Hugging Face module name of a target (q_proj, …, down_proj).</summary>
    public static string HfName(TargetModule t) => t switch
    {
        TargetModule.Q => "q_proj",
        TargetModule.K => "k_proj",
        TargetModule.V => "v_proj",
        TargetModule.O => "o_proj",
        TargetModule.Gate => "gate_proj",
        TargetModule.Up => "up_proj",
        TargetModule.Down => "down_proj",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The Llama module path of a target inside a layer: self_attn.q_proj, mlp.gate_proj, ….</summary>
    public static string HfPath(TargetModule t) => (t is TargetModule.Gate or TargetModule.Up or TargetModule.Down ? "mlp." : "self_attn.") + HfName(t);

    /// <summary>Parses "q,k,v,o,gate,up,down" (also accepts q_proj… names and "all").</summary>
    public static TargetModule[] ParseTargets(string text)
    {
        if (string.Equals(text.Trim(), "all", StringComparison.OrdinalIgnoreCase)) return Enum.GetValues<TargetModule>();
        var list = new List<TargetModule>();
        foreach (var raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var name = raw.ToLowerInvariant().Replace("_proj", "", StringComparison.Ordinal);
            TargetModule t = name switch
            {
                "q" => TargetModule.Q, "k" => TargetModule.K, "v" => TargetModule.V, "o" => TargetModule.O,
                "gate" or "w1" => TargetModule.Gate, "up" or "w3" => TargetModule.Up, "down" or "w2" => TargetModule.Down,
                _ => throw new FormatException($"--targets: unknown target '{raw}' (use q, k, v, o, gate, up, down)"),
            };
            if (!list.Contains(t)) list.Add(t);
        }
        if (list.Count == 0) throw new FormatException("--targets: no target given (use q, k, v, o, gate, up, down)");
        return list.ToArray();
    }
}
