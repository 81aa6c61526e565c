// A model whose tokenizer is a tokenizer.json keeps it through a GGUF export: the byte-level vocabulary is written
// as llama.cpp's "gpt2" model (tokens, merges, pre-tokenizer, special tokens, chat template) and loads back
// tokenizing identically.
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Tests.Models;
using VkPeft.Tests.Training;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class TokenizerExportTests
{
    [Fact]
    public void ByteLevelTokenizerJsonSurvivesGgufExport()
    {
        using var dir = new TempDir();
        var tok = TokenizerFiles.Load(ChatDataTests.WriteTokenizer(dir.Path));
        var source = Base with { Tokenizer = tok };
        string path = dir.File("m.gguf");
        var report = Exporter.Export(source, null, new ExportOptions { Format = ExportFormat.Gguf, DType = ExportDType.F32, OutPath = path });
        Assert.DoesNotContain(report.Notes, n => n.Contains("tokenizer", StringComparison.Ordinal));
        var f = GgufFile.Open(path);
        Assert.Equal("gpt2", f.GetString("tokenizer.ggml.model"));
        Assert.Equal("gpt2", f.GetString("tokenizer.ggml.pre"));
        Assert.Contains("<|assistant|>", f.GetString("tokenizer.chat_template"), StringComparison.Ordinal);
        var back = ModelLoader.Load(path).Tokenizer!;
        const string Text = "<s><|user|>Héllo, wörld 😀  12345\n<|end|>";
        Assert.Equal(tok.Encode(Text, bos: false), back.Encode(Text, bos: false));
        Assert.Equal((tok.Bos, tok.Eos), (back.Bos, back.Eos));
    }

    [Fact]
    public void SentencePieceStyleTokenizerJsonSurvivesGgufExport()
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.json");
        File.WriteAllText(path, """
            {"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
             "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
             "pre_tokenizer": null,
             "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
             "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
             "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
                       "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "c": 6, "▁a": 7, "ab": 8, "▁ab": 9, "bc": 10, "▁abc": 11},
                       "merges": ["▁ a", "a b", "▁a b", "b c", "▁ab c"]}}
            """);
        var tok = TokenizerFiles.Load(path);
        string gguf = dir.File("m.gguf");
        var report = Exporter.Export(Base with { Tokenizer = tok }, null, new ExportOptions { Format = ExportFormat.Gguf, DType = ExportDType.F32, OutPath = gguf });
        Assert.DoesNotContain(report.Notes, n => n.Contains("tokenizer", StringComparison.Ordinal));
        Assert.Equal("llama", GgufFile.Open(gguf).GetString("tokenizer.ggml.model"));
        var back = ModelLoader.Load(gguf).Tokenizer!;
        foreach (string text in new[] { "abc ab a", "cab abc", "bca" })
        {
            Assert.Equal(tok.Encode(text, bos: true), back.Encode(text, bos: true));
            Assert.Equal(tok.Decode(tok.Encode(text, bos: true)), back.Decode(back.Encode(text, bos: true)));
        }
    }
}
