// The one error type for malformed or unsupported model, tokenizer and checkpoint files.
// Every message names the file and the field (header entry, tensor name, metadata key) at fault.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Formats;

public sealed class ModelFormatException : Exception, ISettingError
{
    private readonly SettingMessage? _settingDetail;

    /// <summary>An error whose message names settings (the command line spells them as flags).</summary>
    public ModelFormatException(string file, string field, SettingMessage message, Exception? inner = null)
        : this(file, field, message.ToString(), inner!)
    {
        _settingDetail = new SettingMessage($"{OneLine(file)}: {OneLine(field)}: {message}");
    }

    public ModelFormatException(string file, string field, string message)
        : base(OneLine($"{file}: {field}: {message}"))
    {
        File = file;
        Field = OneLine(field);
        Detail = OneLine(message);
    }

    public ModelFormatException(string file, string field, string message, Exception inner)
        : base(OneLine($"{file}: {field}: {message}"), inner)
    {
        File = file;
        Field = OneLine(field);
        Detail = OneLine(message);
    }

    public ModelFormatException() : this("?", "?", "model format error") { }
    public ModelFormatException(string message) : this("?", "?", message) { }
    public ModelFormatException(string message, Exception inner) : this("?", "?", message, inner) { }

    /// <summary>
    /// The text with control characters (line breaks included) shown as \uXXXX and cut to 1,000 characters: names and
    /// values quoted from a hostile file never break the one-line error.
    /// </summary>
    public static string OneLine(string text)
    {
        var sb = new System.Text.StringBuilder(Math.Min(text.Length, 1000));
        foreach (char ch in text)
        {
            if (sb.Length >= 1000) { sb.Append("..."); break; }
            if (char.IsControl(ch)) sb.Append($"\\u{(int)ch:X4}");
            else sb.Append(ch);
        }
        return sb.ToString();
    }

    /// <summary>Path of the offending file.</summary>
    public string File { get; }

    /// <summary>Header field, tensor name or metadata key at fault.</summary>
    public string Field { get; }

    /// <summary>The message with the settings it names (the message itself when it names none).</summary>
    SettingMessage ISettingError.Detail => _settingDetail ?? SettingMessage.Plain(Message);

    /// <summary>The message without the file and field prefix.</summary>
    public string Detail { get; }
}
