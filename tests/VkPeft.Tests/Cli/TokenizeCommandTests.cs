// `vkpeft tokenize` on the real Mistral tokenizer (the quickest to load): --json ids equal Hugging Face's for a golden case, the text listing
// shows every token, and mistakes in the options are one-line errors.
using System.Text.Json.Nodes;
using VkPeft.Tests.Support;
using VkPeft.Tests.Tokenizers;

namespace VkPeft.Tests.Cli;

[Collection("cli")]
public sealed class TokenizeCommandTests
{
    [SharedDataFact("tokenizers/mistral-7b-v0.1")]
    public void JsonIdsMatchHuggingFace()
    {
        var golden = TokenizerGolden.Expected("mistral-7b-v0.1").GetProperty("cases").EnumerateArray()
            .First(c => c.GetProperty("id").GetString() == "special_llama_inst");
        string path = TokenizerGolden.File("mistral-7b-v0.1", "tokenizer.json");
        var (code, output, err) = CliTests.Run("tokenize", "--tokenizer", path, "--text", golden.GetProperty("text").GetString()!, "--special", "--json");
        Assert.True(code == 0, err);
        var j = JsonNode.Parse(output)!;
        Assert.Equal(TokenizerGolden.Ints(golden.GetProperty("ids")), j["ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray());
        Assert.Equal(golden.GetProperty("decoded").GetString(), j["decoded"]!.GetValue<string>());

        (code, output, err) = CliTests.Run("tokenize", "--tokenizer", path, "--text", "</s>", "--split-special-tokens", "--json");
        Assert.True(code == 0, err);
        Assert.True(JsonNode.Parse(output)!["count"]!.GetValue<int>() > 1);   // the text of the special token, not the token
    }

    [SharedDataFact("tokenizers/mistral-7b-v0.1")]
    public void TextListingShowsTokensAndPieces()
    {
        string path = TokenizerGolden.File("mistral-7b-v0.1", "tokenizer.json");
        var (code, output, err) = CliTests.Run("tokenize", "--tokenizer", path, "--text", "Hello world", "--special");
        Assert.True(code == 0, err);
        Assert.Contains("'▁world'", output);
        Assert.Contains("' world'", output);
        Assert.Contains("3 tokens; decoded: '<s> Hello world'", output);
    }

    [Fact]
    public void GenerateChatAppliesTheTemplate()
    {
        string dir = Directory.CreateTempSubdirectory("vkpeft-chat-cli-").FullName;
        try
        {
            string model = SharedData.Stories260K("stories260K.bin");
            string tok = Training.ChatDataTests.WriteTokenizer(dir);
            var (code, output, err) = CliTests.Run("generate", "--model", model, "--tokenizer", tok, "--prompt", "Hi", "--chat", "--max-tokens", "3");
            Assert.True(code == 0, err);
            Assert.DoesNotContain("Hi", output, StringComparison.Ordinal);      // the reply only, not the rendered prompt
            Assert.Contains("tokens/s", err);
            (code, _, err) = CliTests.Run("generate", "--model", model, "--prompt", "Hi", "--chat", "--max-tokens", "3");
            Assert.NotEqual(0, code);
            Assert.Contains("chat_template", err);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("tokenize", "--text", "x")]
    [InlineData("tokenize", "--tokenizer", "/nonexistent/tokenizer.json", "--text", "x")]
    [InlineData("tokenize", "--tokenizer", "/nonexistent/tokenizer.json")]
    public void MistakesAreOneLineErrors(params string[] args)
    {
        var (code, _, err) = CliTests.Run(args);
        Assert.NotEqual(0, code);
        Assert.StartsWith("error: ", err, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', err.TrimEnd());
    }
}
