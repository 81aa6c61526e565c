// The registry of PEFT methods: name → method. `train`, `plan`, `bench memory`, adapter loading and export look methods
// up here; a new method is one folder under Methods/ plus one Register line (here, or from another assembly).
using VkPeft.Peft.Methods.BiasNorm;
using VkPeft.Peft.Methods.Bottleneck;
using VkPeft.Peft.Methods.Dora;
using VkPeft.Peft.Methods.Ia3;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.Prefix;
using VkPeft.Peft.Methods.Prompt;
using VkPeft.Peft.Methods.QaLora;

namespace VkPeft.Peft.Methods;

public static class PeftMethods
{
    private static readonly Lock Gate = new();
    private static readonly List<PeftMethod> Registered = [new LoraMethod(), new QaLoraMethod(), new BottleneckMethod(), new Ia3Method(),
        new LlamaAdapterMethod(), new PromptMethod(), new PrefixMethod(), new DoraMethod(),
        BiasNormMethod.Bias, BiasNormMethod.Norm];

    /// <summary>Every registered method, in registration order.</summary>
    public static IReadOnlyList<PeftMethod> All
    {
        get { lock (Gate) return [.. Registered]; }
    }

    /// <summary>Adds <paramref name="method"/>; registering the same instance twice is a no-op, a second method under a taken name an error.</summary>
    public static void Register(PeftMethod method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (Gate)
        {
            if (Registered.Contains(method)) return;
            foreach (var name in Names(method))
                if (Find(name) is { } other)
                    throw new ArgumentException($"a PEFT method named '{name}' is already registered ({other.GetType().Name})", nameof(method));
            Registered.Add(method);
        }
    }

    /// <summary>The method with this file name, command-line name or alias (case-insensitive); FormatException when none.</summary>
    public static PeftMethod Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        lock (Gate)
            return Find(name.Trim()) ?? throw new FormatException($"unknown method '{name}' (use {Known})");
    }

    /// <summary>The method with this name or alias, or null.</summary>
    public static PeftMethod? TryGet(string name)
    {
        lock (Gate) return Find(name.Trim());
    }

    /// <summary>"lora, qalora or adapter": the command-line names, for messages.</summary>
    public static string Known
    {
        get
        {
            var names = All.Select(m => m.CliName).ToList();
            return names.Count == 1 ? names[0] : string.Join(", ", names[..^1]) + " or " + names[^1];
        }
    }

    private static IEnumerable<string> Names(PeftMethod m) => new[] { m.Name, m.CliName }.Concat(m.Aliases);

    private static PeftMethod? Find(string name) =>
        Registered.FirstOrDefault(m => Names(m).Any(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase)));
}
