// Errors that name a setting by its identity, not by how a front end spells it: library code says which setting is
// wrong (a Setting: its owner and name, e.g. TrainOptions.Steps) and the command line maps each setting to its flag when
// it prints the one-line error. Only the CLI knows flag names.
using System.Globalization;

namespace VkPeft.Runtime.Vulkan;

/// <summary>A user-facing setting: the type that owns it and its name there (e.g. TrainOptions, Steps).</summary>
public sealed record Setting(string Owner, string Name)
{
    /// <summary>The setting <paramref name="name"/> of <typeparamref name="TOwner"/> (use nameof for the name).</summary>
    public static Setting Of<TOwner>(string name) => new(typeof(TOwner).Name, name);

    public override string ToString() => $"{Owner}.{Name}";
}

/// <summary>
/// A message that mentions settings: an interpolated string whose <see cref="Setting"/> holes are spelled when it is
/// rendered (as the setting's name by default, as a flag by the command line).
/// </summary>
public sealed class SettingMessage
{
    private readonly string _format;
    private readonly object?[] _arguments;

    public SettingMessage(FormattableString text)
    {
        ArgumentNullException.ThrowIfNull(text);
        _format = text.Format;
        _arguments = text.GetArguments();
    }

    /// <summary>The settings the message names, in order; the first is the one at fault.</summary>
    public IReadOnlyList<Setting> Settings => [.. _arguments.OfType<Setting>()];

    /// <summary>The message with each setting spelled by <paramref name="spell"/> (in nested messages too).</summary>
    public string Render(Func<Setting, string> spell) =>
        string.Format(CultureInfo.InvariantCulture, _format, [.. _arguments.Select(a => a switch
        {
            Setting s => spell(s),
            SettingMessage m => m.Render(spell),
            _ => a,
        })]);

    /// <summary>The message with each setting named Owner.Name.</summary>
    public override string ToString() => Render(s => s.ToString());
}

/// <summary>An exception whose message names settings (see <see cref="SettingMessage"/>).</summary>
public interface ISettingError
{
    SettingMessage Detail { get; }
}

/// <summary>A setting with a bad value or a bad combination of settings: a user mistake, reported in one line.</summary>
public sealed class SettingException : FormatException, ISettingError
{
    public SettingException(FormattableString message) : this(new SettingMessage(message)) { }

    public SettingException(SettingMessage detail) : base(detail.ToString()) => Detail = detail;

    public SettingMessage Detail { get; }

    /// <summary>The setting at fault (the first one the message names).</summary>
    public Setting Setting => Detail.Settings[0];
}

/// <summary>The runtime's own settings (<see cref="RuntimeOptions"/>).</summary>
public static class RuntimeSettings
{
    public static readonly Setting Device = Setting.Of<RuntimeOptions>(nameof(RuntimeOptions.Device));
    public static readonly Setting SafeKernels = Setting.Of<RuntimeOptions>(nameof(RuntimeOptions.SafeKernels));
}
