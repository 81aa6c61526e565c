// The one way a tokenizer file is opened (model folders, --tokenizer and `vkpeft tokenize` all come here): a
// Hugging Face tokenizer.json, a SentencePiece tokenizer.model, or a llama2.c tokenizer.bin, chosen by file name.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Tokenizers;

public static class TokenizerFiles
{
    private static readonly string[] FolderFiles = ["tokenizer.json", "tokenizer.model", "tokenizer.bin"];

    /// <summary>
    /// Opens <paramref name="path"/> (a file, or a folder holding tokenizer.json / tokenizer.model / tokenizer.bin).
    /// <paramref name="bos"/>/<paramref name="eos"/> are the model's ids, used where the tokenizer files name none;
    /// <paramref name="vocabSize"/> is required for tokenizer.bin, which does not store its size.
    /// </summary>
    public static ITextTokenizer Load(string path, int? vocabSize = null, int bos = -1, int eos = -1, bool splitSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            string? found = FolderFiles.Select(f => Path.Combine(path, f)).FirstOrDefault(File.Exists);
            path = found ?? throw new FileNotFoundException($"{path}: no tokenizer.json, tokenizer.model or tokenizer.bin in the folder");
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            return HfTokenizer.Load(path, bos, eos).WithSplitSpecialTokens(splitSpecialTokens);
        if (path.EndsWith(".model", StringComparison.OrdinalIgnoreCase))
            return HfTokenizers.LoadSentencePiece(path, bos >= 0 ? bos : null, eos >= 0 ? eos : null);
        if (vocabSize is not { } n)
            throw new SettingException($"{path}: a llama2.c tokenizer.bin does not store its vocabulary size; give the model too ({TokenizerSettings.Model})");
        return Llama2cTokenizer.Load(path, n, bos >= 0 ? bos : 1, eos >= 0 ? eos : 2);
    }
}
