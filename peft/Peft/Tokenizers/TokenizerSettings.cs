// The settings of a model's files and its tokenizer as errors name them (see SettingException): library code says which
// setting is wrong, and a front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Tokenizers;

/// <summary>The model and tokenizer files, and chat-template use, that errors name.</summary>
public static class TokenizerSettings
{
    /// <summary>The model file.</summary>
    public static readonly Setting Model = new("Model", "Path");
    /// <summary>The tokenizer file, when none is found next to the model.</summary>
    public static readonly Setting Tokenizer = new("Tokenizer", "Path");
    /// <summary>Generation through the tokenizer's chat template.</summary>
    public static readonly Setting Chat = new("Generation", "Chat");
}
