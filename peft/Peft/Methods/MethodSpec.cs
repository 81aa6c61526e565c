// A method as a comparison names it: any registered method (lora, ia3, adapter, …), a registered method with some of
// its own on/off switches turned on (`lora+freeze-a`, `lora+rslora`), or a common short name for such a variant
// (`lora-fa` = lora+freeze-a, `dora` = lora+dora). Resolved through the PeftMethods registry only, so a method
// registered later is accepted with no change here.
namespace VkPeft.Peft.Methods;

/// <param name="Label">The name as given, lower-cased (also the run's folder name).</param>
/// <param name="Method">The registered method that trains it.</param>
/// <param name="Switches">The method's switch options (e.g. "--freeze-a") turned on for this entry.</param>
public sealed record MethodSpec(string Label, PeftMethod Method, IReadOnlyList<string> Switches)
{
    /// <summary>Short names of common variants: the name → the registered method and the switch it turns on.</summary>
    public static readonly IReadOnlyList<(string Name, string Method, string Switch)> Shorthands =
    [
        ("lora-fa", "lora", "--freeze-a"),
        ("dora", "lora", "--dora"),
    ];

    /// <summary>The adapter configuration with this entry's switches turned on.</summary>
    public AdapterConfig Apply(AdapterConfig config)
    {
        foreach (var flag in Switches)
            config = Method.Options.First(o => o.Flag == flag).Apply(config, bool.TrueString);
        return config;
    }

    /// <summary>
    /// Resolves one name; FormatException (naming <paramref name="what"/>) listing the accepted names when it is unknown.
    /// A registered name wins over a shorthand of the same spelling (a method registered as "dora" is used as is).
    /// </summary>
    public static MethodSpec Parse(string name, string what = "--methods")
    {
        var label = name.Trim().ToLowerInvariant();
        if (label.Length == 0) throw new FormatException($"{what}: empty method name (use {Known})");
        if (PeftMethods.TryGet(label) is { } registered) return new MethodSpec(label, registered, []);
        foreach (var (shortName, method, flag) in Shorthands)
            if (shortName == label && Switch(method, flag) is { } m) return new MethodSpec(label, m, [flag]);
        var parts = label.Split('+');
        if (parts.Length > 1 && PeftMethods.TryGet(parts[0]) is { } baseMethod)
        {
            var flags = new List<string>();
            foreach (var part in parts[1..])
            {
                var flag = "--" + part;
                if (Switch(parts[0], flag) == null)
                    throw new FormatException($"{what}: '{name}': {baseMethod.CliName} has no on/off option {flag} (its switches: {SwitchList(baseMethod)})");
                if (!flags.Contains(flag)) flags.Add(flag);
            }
            return new MethodSpec(label, baseMethod, flags);
        }
        throw new FormatException($"{what}: unknown method '{name}' (use {Known})");
    }

    /// <summary>Resolves a comma-separated list; duplicates and an empty list are FormatExceptions naming <paramref name="what"/>.</summary>
    public static IReadOnlyList<MethodSpec> ParseList(string list, string what = "--methods")
    {
        var specs = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(n => Parse(n, what)).ToList();
        if (specs.Count == 0) throw new FormatException($"{what}: no method given (use {Known})");
        foreach (var dup in specs.GroupBy(s => s.Label).Where(g => g.Count() > 1))
            throw new FormatException($"{what}: '{dup.Key}' is listed twice");
        return specs;
    }

    /// <summary>Every accepted name for messages: the registered methods, the available shorthands, and METHOD+SWITCH.</summary>
    public static string Known
    {
        get
        {
            var names = PeftMethods.All.Select(m => m.CliName)
                .Concat(Shorthands.Where(s => Switch(s.Method, s.Switch) != null && PeftMethods.TryGet(s.Name) == null).Select(s => s.Name));
            return string.Join(", ", names) + ", or METHOD+SWITCH such as lora+rslora";
        }
    }

    /// <summary>The registered method <paramref name="method"/> when it declares the on/off option <paramref name="flag"/>.</summary>
    private static PeftMethod? Switch(string method, string flag) =>
        PeftMethods.TryGet(method) is { } m && m.Options.Any(o => o.Flag == flag && o.IsSwitch) ? m : null;

    private static string SwitchList(PeftMethod m)
    {
        var flags = m.Options.Where(o => o.IsSwitch).Select(o => o.Flag[2..]).ToList();
        return flags.Count == 0 ? "none" : string.Join(", ", flags);
    }
}
