// What a trainable adapter is: the PEFT method, its own settings record (the method's hyperparameters), which linear
// layers it targets, and the base quantization it was trained against (so generate/eval can rebuild the same base).
using VkPeft.Peft.Engine;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods;

/// <summary>The seven linear weight kinds of a Llama layer an adapter may target.</summary>
public enum TargetModule { Q, K, V, O, Gate, Up, Down }

/// <summary>
/// An adapter: the method, the linears it targets, the method's own settings (<see cref="MethodSettings"/>, read with
/// <see cref="SettingsOf{T}"/>), the base quantization it trains against and the base model. Everything here is shared
/// by every method; a method's knobs live in its settings record in its own folder.
/// </summary>
public sealed record AdapterConfig
{
    /// <summary>The PEFT method (see <see cref="PeftMethods"/>).</summary>
    public required PeftMethod Method { get; init; }
    public TargetModule[] Targets { get; init; } = Enum.GetValues<TargetModule>();
    /// <summary>The method's own configuration record; null for the method's defaults (<see cref="PeftMethod.DefaultSettings"/>).</summary>
    public MethodSettings? Settings { get; init; }
    /// <summary>How the frozen base weights were held while training (recorded with the adapter).</summary>
    public required BaseQuant BaseQuant { get; init; }
    /// <summary>Path or name of the base model the adapter was trained on.</summary>
    public string BaseModel { get; init; } = "";

    /// <summary>
    /// The method's settings as <typeparamref name="T"/>: <see cref="Settings"/> when it is one, else the method's
    /// defaults for <see cref="BaseQuant"/> (another method's settings, left by switching <see cref="Method"/>, count as
    /// none). Asking for a record the method does not have is a programming error.
    /// </summary>
    public T SettingsOf<T>() where T : MethodSettings =>
        Settings as T ?? Method.DefaultSettings(BaseQuant) as T
        ?? throw new InvalidOperationException($"{Method.CliName} adapters have no {typeof(T).Name}");

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

    /// <summary>Parses the targets setting "q,k,v,o,gate,up,down" (also accepts q_proj… names and "all").</summary>
    public static TargetModule[] ParseTargets(string text) =>
        ParseTargetList(text, out var error) ?? throw new SettingException($"{AdapterSettings.Targets}: {error}");

    /// <summary>
    /// The targets a list "q,k,v,o,gate,up,down" names (also q_proj… names and "all"), or null with the reason in
    /// <paramref name="error"/> (for lists that go by another name, e.g. (IA)³'s feed-forward modules).
    /// </summary>
    public static TargetModule[]? ParseTargetList(string text, out string error)
    {
        error = "";
        if (string.Equals(text.Trim(), "all", StringComparison.OrdinalIgnoreCase)) return Enum.GetValues<TargetModule>();
        var list = new List<TargetModule>();
        foreach (var raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var name = raw.ToLowerInvariant().Replace("_proj", "", StringComparison.Ordinal);
            TargetModule? t = name switch
            {
                "q" => TargetModule.Q, "k" => TargetModule.K, "v" => TargetModule.V, "o" => TargetModule.O,
                "gate" or "w1" => TargetModule.Gate, "up" or "w3" => TargetModule.Up, "down" or "w2" => TargetModule.Down,
                _ => null,
            };
            if (t is not { } target)
            {
                error = $"unknown target '{raw}' (use q, k, v, o, gate, up, down)";
                return null;
            }
            if (!list.Contains(target)) list.Add(target);
        }
        if (list.Count == 0)
        {
            error = "no target given (use q, k, v, o, gate, up, down)";
            return null;
        }
        return list.ToArray();
    }
}
