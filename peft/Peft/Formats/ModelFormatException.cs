// The one error type for malformed or unsupported model, tokenizer and checkpoint files.
// Every message names the file and the field (header entry, tensor name, metadata key) at fault.
namespace VkPeft.Peft.Formats;

public sealed class ModelFormatException : Exception
{
    public ModelFormatException(string file, string field, string message)
        : base($"{file}: {field}: {message}")
    {
        File = file;
        Field = field;
        Detail = message;
    }

    public ModelFormatException(string file, string field, string message, Exception inner)
        : base($"{file}: {field}: {message}", inner)
    {
        File = file;
        Field = field;
        Detail = message;
    }

    public ModelFormatException() : this("?", "?", "model format error") { }
    public ModelFormatException(string message) : this("?", "?", message) { }
    public ModelFormatException(string message, Exception inner) : this("?", "?", message, inner) { }

    /// <summary>Path of the offending file.</summary>
    public string File { get; }

    /// <summary>Header field, tensor name or metadata key at fault.</summary>
    public string Field { get; }

    /// <summary>The message without the file and field prefix.</summary>
    public string Detail { get; }
}
