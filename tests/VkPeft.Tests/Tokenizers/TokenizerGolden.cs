// The real Hugging Face tokenizers in ../shared/tokenizers (third-party files, never committed) with expected.json:
// Hugging Face's own ids, token strings, decoded forms and chat renderings. Loaded once through the same path
// train/eval/generate use (TokenizerFiles.Load).
using System.Text.Json;
using VkPeft.Peft.Tokenizers;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Tokenizers;

internal static class TokenizerGolden
{
    public static readonly string[] Names = ["llama3", "mistral-7b-v0.1"];

    private static readonly Dictionary<string, Lazy<(HfTokenizer Tokenizer, JsonElement Expected)>> Cache =
        Names.ToDictionary(n => n, n => new Lazy<(HfTokenizer, JsonElement)>(() => Open(n)));

    public static HfTokenizer Tokenizer(string name) => Cache[name].Value.Tokenizer;

    public static JsonElement Expected(string name) => Cache[name].Value.Expected;

    /// <summary>Path of a file of one golden tokenizer; a clear error when the third-party files are not there.</summary>
    public static string File(string name, string file)
    {
        string path;
        try { path = SharedData.Path("tokenizers", name, file); }
        catch (DirectoryNotFoundException e)
        {
            throw new InvalidOperationException(
                $"cannot run: the Hugging Face tokenizer files are third-party and never committed; they belong in ../shared/tokenizers/{name}/ next to the repository ({e.Message})", e);
        }
        if (!System.IO.File.Exists(path))
            throw new InvalidOperationException(
                $"cannot run: {path} is missing (the Hugging Face tokenizer files are third-party and never committed; see the shared data's tokenizers/README.md)");
        return path;
    }

    private static (HfTokenizer, JsonElement) Open(string name)
    {
        var tok = (HfTokenizer)TokenizerFiles.Load(File(name, "tokenizer.json"));
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(File(name, "expected.json")));
        return (tok, doc.RootElement.Clone());
    }

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(x => x.GetInt32()).ToArray();
}
