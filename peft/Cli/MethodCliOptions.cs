// --method and the options every registered PEFT method declares, turned into command-line options once (a flag two
// methods share appears once); the chosen method's options set its adapter configuration. Shared by train and plan.
using System.CommandLine;
using VkPeft.Peft.Methods;

namespace VkPeft.Cli;

public sealed class MethodCliOptions
{
    private readonly List<(MethodOption Spec, Option Option)> _options = [];

    public MethodCliOptions()
    {
        Method = new Option<string>("--method") { Description = PeftMethods.Known, DefaultValueFactory = _ => "lora" };
        foreach (var spec in PeftMethods.All.SelectMany(m => m.Options))
        {
            if (_options.Any(o => o.Spec.Flag == spec.Flag)) continue;
            Option option = spec.IsSwitch
                ? new Option<bool>(spec.Flag) { Description = spec.Description }
                : new Option<string>(spec.Flag) { Description = spec.Description, DefaultValueFactory = _ => spec.Default! };
            _options.Add((spec, option));
        }
    }

    public Option<string> Method { get; }

    /// <summary>Adds --method (unless <paramref name="method"/> is false) and every method option to <paramref name="cmd"/>.</summary>
    public void AddTo(Command cmd, bool methodOptions = true, bool method = true)
    {
        if (method) cmd.Options.Add(Method);
        if (methodOptions)
            foreach (var (_, option) in _options) cmd.Options.Add(option);
    }

    /// <summary>The method --method names; an unknown name is a usage error listing the registered ones.</summary>
    public static PeftMethod Parse(string name) =>
        PeftMethods.TryGet(name) ?? throw new CliUsageException($"--method: unknown method '{name}' (use {PeftMethods.Known})");

    /// <summary>The chosen method and <paramref name="common"/> with that method's options applied (defaults where not given).</summary>
    public AdapterConfig Configure(ParseResult parse, AdapterConfig common)
    {
        var config = common;
        foreach (var spec in common.Method.Options)
        {
            var option = _options.FirstOrDefault(o => o.Spec.Flag == spec.Flag).Option;   // null: registered after this command was built
            string value = option switch
            {
                Option<bool> b => parse.GetValue(b).ToString(),
                Option<string> s => parse.GetValue(s) ?? spec.Default!,
                _ => spec.Default ?? bool.FalseString,
            };
            config = spec.Set(config, value);
        }
        return config;
    }
}
