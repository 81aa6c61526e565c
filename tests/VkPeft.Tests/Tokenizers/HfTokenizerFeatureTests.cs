// tokenizer.json features on small hand-written files: unsupported kinds are one-line errors naming file and field,
// table-driven Unicode normalization, letters outside the BMP in pre-tokenizer regexes, ignore_merges, byte fallback.
using System.Text;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Tokenizers;
using VkPeft.Tests.Models;

namespace VkPeft.Tests.Tokenizers;

public sealed class HfTokenizerFeatureTests
{
    private const string Vocab = """{"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4, "bc": 5, "<0xC3>": 6, "<0xA9>": 7, "<unk>": 8}""";

    private static string Json(string model = "", string normalizer = "null", string preTokenizer = "null", string decoder = "null", string post = "null") =>
        "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": " + normalizer + ", \"pre_tokenizer\": " + preTokenizer
        + ", \"post_processor\": " + post + ", \"decoder\": " + decoder
        + ", \"model\": {\"type\": \"BPE\", \"vocab\": " + Vocab + ", \"merges\": [\"a b\", \"b c\", \"ab c\"]" + model + "}}";

    private static HfTokenizer Load(TempDir dir, string json)
    {
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, json);
        return (HfTokenizer)TokenizerFiles.Load(path);
    }

    [Theory]
    [InlineData("\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]", "model.type")]
    [InlineData("\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}", "model.type")]
    [InlineData("\"type\": \"BPE\", \"vocab\": {\"a</w>\": 0}, \"merges\": [], \"end_of_word_suffix\": \"</w>\"", "model.end_of_word_suffix")]
    [InlineData("\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"continuing_subword_prefix\": \"##\"", "model.continuing_subword_prefix")]
    public void UnsupportedModelsAreErrorsNamingFileAndField(string model, string field)
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, "{\"model\": {" + model + "}}");
        var e = Assert.Throws<ModelFormatException>(() => TokenizerFiles.Load(path));
        Assert.Equal(field, e.Field);
        Assert.StartsWith(path + ": " + field + ": ", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("""{"type": "Precompiled", "precompiled_charsmap": ""}""", "null", "null", "normalizer.type")]
    [InlineData("""{"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "BertNormalizer"}]}""", "null", "null", "normalizer.normalizers[1].type")]
    [InlineData("null", """{"type": "BertPreTokenizer"}""", "null", "pre_tokenizer.type")]
    [InlineData("null", "null", """{"type": "WordPiece", "prefix": "##"}""", "decoder.type")]
    public void UnsupportedStagesAreErrorsNamingTheirPath(string normalizer, string pre, string decoder, string field)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ModelFormatException>(() => Load(dir, Json(normalizer: normalizer, preTokenizer: pre, decoder: decoder)));
        Assert.Equal(field, e.Field);
    }

    [Fact]
    public void IgnoreMergesTakesWholeVocabularyWords()
    {
        using var dir = new TempDir();
        var plain = Load(dir, Json());
        Assert.Equal([4], plain.Encode("abc", addSpecialTokens: false));
        var model = new BpeModel(new Dictionary<string, int> { ["a"] = 0, ["b"] = 1, ["c"] = 2, ["ab"] = 3, ["bc"] = 4, ["abc"] = 5 },
            [("a", "b"), ("b", "c")], null, false, false, ignoreMerges: false);
        var ids = new List<int>();
        model.Encode("abc", ids);
        Assert.Equal([3, 2], ids);                // a b merges first, "ab c" is no merge: two tokens
        var ignoring = new BpeModel(new Dictionary<string, int> { ["a"] = 0, ["b"] = 1, ["c"] = 2, ["ab"] = 3, ["bc"] = 4, ["abc"] = 5 },
            [("a", "b"), ("b", "c")], null, false, false, ignoreMerges: true);
        ids.Clear();
        ignoring.Encode("abc", ids);
        Assert.Equal([5], ids);                   // the whole word is in the vocabulary
    }

    [Fact]
    public void ByteFallbackAndUnknownCharacters()
    {
        using var dir = new TempDir();
        var tok = Load(dir, Json(model: ", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true",
            decoder: """{"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}"""));
        Assert.Equal([2, 6, 7, 8], tok.Encode("abéxy", addSpecialTokens: false));   // é as bytes, "xy" one fused <unk>
        Assert.Equal("abé<unk>", tok.Decode([2, 6, 7, 8], skipSpecialTokens: false, cleanUp: false));
        Assert.Equal("ab\uFFFD", tok.Decode([2, 6], skipSpecialTokens: false, cleanUp: false));  // an incomplete character
    }

    [Theory]
    [InlineData("NFC", "e\u0301 A\u030a\u0323 \u1100\u1161\u11a8 \u212b q\u0307\u0323 \ufb01", "\u00e9 \u1ea0\u030a \uac01 \u00c5 q\u0323\u0307 \ufb01")]
    [InlineData("NFD", "\u00e9 \uac01 \u212b", "e\u0301 \u1100\u1161\u11a8 A\u030a")]
    [InlineData("NFKC", "\ufb01 \u2460 \uff21 x\u00b2 e\u0301", "fi 1 A x2 \u00e9")]
    [InlineData("NFKD", "\ufb01 \u00e9", "fi e\u0301")]
    public void NormalizesUnicodeUnderInvariantGlobalization(string form, string input, string expected)
    {
        var f = form switch { "NFC" => NormalizationForm.FormC, "NFD" => NormalizationForm.FormD, "NFKC" => NormalizationForm.FormKC, _ => NormalizationForm.FormKD };
        Assert.Equal(expected, UnicodeNormalization.Normalize(input, f));
    }

    [Fact]
    public void RegexClassesSeeLettersOutsideTheBasicMultilingualPlane()
    {
        var rx = new CodePointRegex(@" ?\p{L}+| ?[^\s\p{L}\p{N}]+");
        string text = " 𠮷野家 😀😀 𝐀b";
        var pieces = rx.Matches(text).Select(m => text.Substring(m.Start, m.Length)).ToArray();
        Assert.Equal([" 𠮷野家", " 😀😀", " 𝐀b"], pieces);
    }
}
