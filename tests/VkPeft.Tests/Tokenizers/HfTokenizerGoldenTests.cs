// Every case of ../shared/tokenizers/*/expected.json: ids and token strings exactly, and the three decoded forms
// (default, skip_special_tokens, no clean-up). Each test walks all ~150 cases of one tokenizer and lists every
// mismatch, so one failure shows the whole picture.
using System.Text;
using System.Text.Json;
using VkPeft.Peft.Tokenizers;

using VkPeft.Tests.Support;

namespace VkPeft.Tests.Tokenizers;

public sealed class HfTokenizerGoldenTests
{
    public static TheoryData<string> Names => new(TokenizerGolden.Names);

    [SharedDataTheory("tokenizers"), MemberData(nameof(Names))]
    public void EncodesEveryCaseAsHuggingFace(string name)
    {
        var tok = TokenizerGolden.Tokenizer(name);
        var split = tok.WithSplitSpecialTokens(true);
        var failures = new StringBuilder();
        int cases = 0;
        foreach (var c in TokenizerGolden.Expected(name).GetProperty("cases").EnumerateArray())
        {
            cases++;
            var t = c.GetProperty("split_special_tokens").GetBoolean() ? split : tok;
            int[] want = TokenizerGolden.Ints(c.GetProperty("ids"));
            int[] got = t.Encode(c.GetProperty("text").GetString()!, addSpecialTokens: c.GetProperty("add_special_tokens").GetBoolean());
            if (!got.SequenceEqual(want))
                failures.AppendLine($"{c.GetProperty("id")}: ids [{string.Join(",", got)}], expected [{string.Join(",", want)}]");
            var wantTokens = c.GetProperty("tokens").EnumerateArray().Select(x => x.GetString()).ToArray();
            var gotTokens = want.Select(t.TokenString).ToArray();
            if (!gotTokens.SequenceEqual(wantTokens))
                failures.AppendLine($"{c.GetProperty("id")}: tokens [{string.Join(",", gotTokens)}], expected [{string.Join(",", wantTokens)}]");
        }
        Assert.True(cases >= 100, $"{name}: expected.json holds only {cases} cases");
        Assert.True(failures.Length == 0, $"{name}:\n{failures}");
    }

    [SharedDataTheory("tokenizers"), MemberData(nameof(Names))]
    public void DecodesEveryCaseAsHuggingFace(string name)
    {
        var tok = TokenizerGolden.Tokenizer(name);
        var failures = new StringBuilder();
        void Check(JsonElement c, string field, string got)
        {
            string want = c.GetProperty(field).GetString()!;
            if (got != want) failures.AppendLine($"{c.GetProperty("id")}: {field} {JsonSerializer.Serialize(got)}, expected {JsonSerializer.Serialize(want)}");
        }
        foreach (var c in TokenizerGolden.Expected(name).GetProperty("cases").EnumerateArray())
        {
            int[] ids = TokenizerGolden.Ints(c.GetProperty("ids"));
            Check(c, "decoded", tok.Decode(ids, skipSpecialTokens: false, cleanUp: tok.CleanUpTokenizationSpaces));
            Check(c, "decoded_skip_special_tokens", tok.Decode(ids, skipSpecialTokens: true, cleanUp: tok.CleanUpTokenizationSpaces));
            Check(c, "decoded_no_cleanup", tok.Decode(ids, skipSpecialTokens: false, cleanUp: false));
        }
        Assert.True(failures.Length == 0, $"{name}:\n{failures}");
    }

    [SharedDataFact("tokenizers")]
    public void TokenizerConfigDecidesSpecialTokens()
    {
        var llama3 = TokenizerGolden.Tokenizer("llama3");
        Assert.Equal((128000, 128001), (llama3.Bos, llama3.Eos));
        Assert.True(llama3.CleanUpTokenizationSpaces);
        Assert.Equal([9906], llama3.Encode("Hello", bos: true));            // these files' post-processor adds no BOS
        Assert.Equal([9906, 128001], llama3.Encode("Hello", bos: true, eos: true));
        var mistral = TokenizerGolden.Tokenizer("mistral-7b-v0.1");
        Assert.Equal((1, 2), (mistral.Bos, mistral.Eos));
        Assert.False(mistral.CleanUpTokenizationSpaces);
        Assert.Equal([1, 22557], mistral.Encode("Hello", bos: true));
        Assert.Null(mistral.ChatTemplate);
        Assert.NotNull(llama3.ChatTemplate);
    }
}

/// <summary>A GGUF "gpt2" vocabulary with pre-tokenizer "llama-bpe" (Llama 3 in llama.cpp's files) tokenizes as HF.</summary>
[Trait("Category", "Exhaustive")]
public sealed class GgufByteLevelGoldenTests
{
    [SharedDataFact("tokenizers/llama3")]
    public void Llama3VocabularyFromGgufFieldsMatchesHuggingFace()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TokenizerGolden.File("llama3", "tokenizer.json")));
        var model = doc.RootElement.GetProperty("model");
        var vocab = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
        var merges = model.GetProperty("merges").EnumerateArray().Select(m => m.GetString()!).Select(m => (m[..m.IndexOf(' ', 1)], m[(m.IndexOf(' ', 1) + 1)..])).ToList();
        var special = doc.RootElement.GetProperty("added_tokens").EnumerateArray().ToDictionary(a => a.GetProperty("content").GetString()!, a => a.GetProperty("id").GetInt32());
        var tok = (HfTokenizer)HfTokenizers.CreateByteLevel(vocab, merges, HfTokenizers.Llama3Pattern, special, 128256, 128000, 128001, ignoreMerges: true);
        var failures = new StringBuilder();
        foreach (var c in TokenizerGolden.Expected("llama3").GetProperty("cases").EnumerateArray())
        {
            if (c.GetProperty("split_special_tokens").GetBoolean()) continue;
            int[] want = TokenizerGolden.Ints(c.GetProperty("ids"));
            if (!tok.Encode(c.GetProperty("text").GetString()!, addSpecialTokens: false).SequenceEqual(want)) failures.AppendLine($"{c.GetProperty("id")}: ids differ");
            if (tok.Decode(want, skipSpecialTokens: false, cleanUp: false) != c.GetProperty("decoded_no_cleanup").GetString()) failures.AppendLine($"{c.GetProperty("id")}: decode differs");
        }
        Assert.True(failures.Length == 0, failures.ToString());
    }
}
