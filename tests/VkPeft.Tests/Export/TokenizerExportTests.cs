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
}
