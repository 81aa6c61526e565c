// A method as a comparison names it: any registered method (lora, ia3, adapter, …), a registered method with some of
// its own on/off switches turned on (`lora+freeze-a`, `lora+rslora`), or a common short name for such a variant
// (`lora-fa` = lora+freeze-a, `dora` = lora+dora). Resolved through the PeftMethods registry only, so a method
// registered later is accepted with no change here.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods;

/// <param name="Label">The name as given, lower-cased (also the run's folder name).</param>
/// <param name="Method">The registered method that trains it.</param>
/// <param name="Switches">The method's on/off options turned on for this entry.</param>
public sealed record MethodSpec(string Label, PeftMethod Method, IReadOnlyList<MethodOption> Switches)
{
    /// <summary>Short names of common variants: the name → the registered method and the switch it turns on (by its name, e.g. freeze-a).</summary>
    public static readonly IReadOnlyList<(string Name, string Method, string Switch)> Shorthands =
    [
        ("lora-fa", "lora", "freeze-a"),
        ("dora", "lora", "dora"),
    ];

    /// <summary>The adapter configuration with this entry's switches turned on.</summary>
    public AdapterConfig Apply(AdapterConfig config)
    {
        foreach (var option in Switches)
            config = option.Set(config, bool.TrueString);
        return config;
    }

    /// <summary>
    /// Resolves one name; SettingException (naming <paramref name="what"/>, by default the method list) listing the
    /// accepted names when it is unknown. A registered name wins over a shorthand of the same spelling (a method
    /// registered as "dora" is used as is).
    /// </summary>
    public static MethodSpec Parse(string name, Setting? what = null)
    {
        what ??= AdapterSettings.Methods;
        var label = name.Trim().ToLowerInvariant();
        if (label.Length == 0) throw new SettingException($"{what}: empty method name (use {Known})");
        if (PeftMethods.TryGet(label) is { } registered) return new MethodSpec(label, registered, []);
        foreach (var (shortName, method, switchName) in Shorthands)
            if (shortName == label && Switch(method, switchName) is { } option) return new MethodSpec(label, PeftMethods.Get(method), [option]);
        var parts = label.Split('+');
        if (parts.Length > 1 && PeftMethods.TryGet(parts[0]) is { } baseMethod)
        {
            var switches = new List<MethodOption>();
            foreach (var part in parts[1..])
            {
                var option = Switch(parts[0], part)
                    ?? throw new SettingException($"{what}: '{name}': {baseMethod.CliName} has no on/off option {MethodOptionSetting(part)} (its switches: {SwitchList(baseMethod)})");
                if (!switches.Contains(option)) switches.Add(option);
            }
            return new MethodSpec(label, baseMethod, switches);
        }
        throw new SettingException($"{what}: unknown method '{name}' (use {Known})");
    }

    /// <summary>Resolves a comma-separated list; duplicates and an empty list are SettingExceptions naming <paramref name="what"/>.</summary>
    public static IReadOnlyList<MethodSpec> ParseList(string list, Setting? what = null)
    {
        what ??= AdapterSettings.Methods;
        var specs = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(n => Parse(n, what)).ToList();
        if (specs.Count == 0) throw new SettingException($"{what}: no method given (use {Known})");
        foreach (var dup in specs.GroupBy(s => s.Label).Where(g => g.Count() > 1))
            throw new SettingException($"{what}: '{dup.Key}' is listed twice");
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

    /// <summary>The on/off option called <paramref name="name"/> (its flag without the dashes) of the registered method <paramref name="method"/>, if any.</summary>
    private static MethodOption? Switch(string method, string name) =>
        PeftMethods.TryGet(method)?.Options.FirstOrDefault(o => o.IsSwitch && SwitchName(o) == name);

    /// <summary>A switch's name in METHOD+SWITCH: its flag without the leading dashes.</summary>
    private static string SwitchName(MethodOption o) => o.Flag.TrimStart('-');

    /// <summary>A method option named in a message that need not exist (the command line spells it as a flag).</summary>
    public static Setting MethodOptionSetting(string name) => Setting.Of<MethodOption>(name);

    private static string SwitchList(PeftMethod m)
    {
        var names = m.Options.Where(o => o.IsSwitch).Select(SwitchName).ToList();
        return names.Count == 0 ? "none" : string.Join(", ", names);
    }
}
