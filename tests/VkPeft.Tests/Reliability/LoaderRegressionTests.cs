// Every crash class the loader fuzzer found, kept as a named case with its (generated) input: each must now be a
// one-line error naming the file and field. A few run through the real vkpeft process: exit code 2, no stack trace.
using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using VkPeft.Tests.Models;

namespace VkPeft.Tests.Reliability;

public sealed class LoaderRegressionTests
{
    /// <summary>Writes <paramref name="target"/> with <paramref name="file"/> replaced and expects a clean refusal naming <paramref name="expected"/>.</summary>
    private static string Refused(FuzzTarget target, string file, byte[] bytes, string expected)
    {
        using var dir = new TempDir();
        LoaderFuzzTests.Write(target, dir.Path, file, bytes);
        string? outcome = LoaderFuzzTests.RunCase(target, dir.Path, bytes.Length);
        Assert.NotNull(outcome);
        Assert.StartsWith("refused: ", outcome);
        Assert.Contains(expected, outcome);
        return outcome;
    }

    private static byte[] EditHeader(byte[] safetensors, Func<string, string> edit)
    {
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(safetensors);
        byte[] header = Encoding.UTF8.GetBytes(edit(Encoding.UTF8.GetString(safetensors, 8, n)));
        return [.. BitConverter.GetBytes((ulong)header.Length), .. header, .. safetensors[(8 + n)..]];
    }

    private static byte[] Replace(byte[] data, string from, byte[] to)
    {
        int at = data.AsSpan().IndexOf(Encoding.UTF8.GetBytes(from));
        Assert.True(at >= 0, from);
        return [.. data[..at], .. to, .. data[(at + Encoding.UTF8.GetByteCount(from))..]];
    }

    [Fact]
    public void SafetensorsHeaderWithInvalidUtf8()
    {
        var t = FuzzCorpus.Create("safetensors");
        byte[] bytes = Replace(t.Files["model.safetensors"], "model.norm.weight", [.. "model.norm.wei"u8, 0xC3, 0x28, 0xFF]);
        Refused(t, "model.safetensors", bytes, "header: invalid UTF-8 at byte");
    }

    [Fact]
    public void SafetensorsDataOffsetsOfTheWrongType()
    {
        var t = FuzzCorpus.Create("safetensors");
        byte[] bytes = EditHeader(t.Files["model.safetensors"], h => h.Replace("\"data_offsets\":[0,", "\"data_offsets\":[\"0\",", StringComparison.Ordinal));
        Refused(t, "model.safetensors", bytes, "data_offsets must be [begin, end]");
    }

    [Fact]
    public void ShardIndexWithAShardNameThatIsNotAString()
    {
        var t = FuzzCorpus.Create("safetensors-sharded");
        byte[] bytes = Replace(t.Files["model.safetensors.index.json"], "\"model-00001-of-00002.safetensors\"", "{\"x\":1}"u8.ToArray());
        Refused(t, "model.safetensors.index.json", bytes, "expected a string");
    }

    [Fact]
    public void Llama2cVocabSizeIntMinValue()
    {
        var t = FuzzCorpus.Create("llama2c");
        byte[] bytes = (byte[])t.Files["model.bin"].Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(20), int.MinValue);
        Refused(t, "model.bin", bytes, "vocab_size");
    }

    [Fact]
    public void Llama2cDimsWhoseProductOverflowsAnInt()
    {
        // dim 46,344 (4 heads of 11,586): dim² is past int.MaxValue; the file-size check must answer, not an overflow.
        var t = FuzzCorpus.Create("llama2c");
        byte[] bytes = (byte[])t.Files["model.bin"].Clone();
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(0), 46_344);
        Refused(t, "model.bin", bytes, "model.bin");
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(0), 32);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), 1 << 24);   // 16M layers: refused before the layout
        Refused(t, "model.bin", bytes, "n_layers");
    }

    [Fact]
    public void ConfigJsonFieldsOfTheWrongType()
    {
        var t = FuzzCorpus.Create("hf-config");
        Refused(t, "config.json", Replace(t.Files["config.json"], "[\"LlamaForCausalLM\"], \"model_type\": \"llama\"", "[7], \"model_type\": \"\""u8.ToArray()),
            "model_type: unsupported architecture '(none)'");
        Refused(t, "config.json", Replace(t.Files["config.json"], "\"eos_token_id\": 2", "\"eos_token_id\": [\"2\"]"u8.ToArray()), "eos_token_id[0]: expected an integer");
        Refused(t, "config.json", Replace(t.Files["config.json"], "{", "[{"u8.ToArray()), "not valid JSON");
    }

    [Fact]
    public void TokenizerJsonMalformedOrOfTheWrongTypes()
    {
        var t = FuzzCorpus.Create("tokenizer-json");
        byte[] good = t.Files["tokenizer.json"];
        Refused(t, "tokenizer.json", good[..^3], "tokenizer.json: json: not valid JSON");
        Refused(t, "tokenizer.json", Replace(good, "\"a\":4", "\"a\":{}"u8.ToArray()), "model.vocab.a: expected an integer");
        Refused(t, "tokenizer.json", Replace(good, "\"a\":4", "\"a\":4.5"u8.ToArray()), "model.vocab.a: expected an integer");
        Refused(t, "tokenizer.json", Replace(good, "\"a\":4", "\"a\":2000000000"u8.ToArray()), "token id 2000000000 outside");
        Refused(t, "tokenizer.json", Replace(good, "\"a\":4", "\"a\":-4"u8.ToArray()), "token id -4 outside");
        Refused(t, "tokenizer.json", Replace(good, "\"content\":\"\\u003Cunk\\u003E\"", "\"content\":0"u8.ToArray()), "added_tokens[0].content");
        Refused(t, "tokenizer.json", "[1]"u8.ToArray(), "must be a JSON object");
    }

    [Fact]
    public void AdapterConfigFieldsOfTheWrongType()
    {
        var peft = FuzzCorpus.Create("peft-adapter");
        Refused(peft, "adapter_config.json", Replace(peft.Files["adapter_config.json"], "\"q_proj\"", "3"u8.ToArray()), "target_modules: expected a string");
        var vk = FuzzCorpus.Create("vkpeft-adapter");
        Refused(vk, "vkpeft_adapter.json", Replace(vk.Files["vkpeft_adapter.json"], "\"lora\"", [0x22, 0xC3, 0x22]), "invalid UTF-8");
    }

    [Fact]
    public void JsonErrorQuotingALineBreakStaysOneLine()
    {
        var t = FuzzCorpus.Create("vkpeft-adapter");
        string outcome = Refused(t, "vkpeft_adapter.json", Replace(t.Files["vkpeft_adapter.json"], "\"lora\"", "\"lo\nra"u8.ToArray()), "not valid JSON");
        Assert.DoesNotContain('\n', outcome);
    }

    [Fact]
    public void GgufArrayCountBeyondTheFileIsRefusedBeforeAllocating()
    {
        var t = FuzzCorpus.Create("gguf");
        var s = t.Structures["model.gguf"];
        var (offset, _, _) = s.Ints.First(i => i.Name.EndsWith(".count", StringComparison.Ordinal));
        byte[] bytes = (byte[])t.Files["model.gguf"].Clone();
        // 37 tokens declared as 2^28: fewer than the file's bytes for u8 elements, far more than it holds for strings.
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(offset), 1UL << 28);
        Refused(t, "model.gguf", bytes, "runs past the end of the file");
    }

    [Fact]
    public void GgufStringWithInvalidUtf8()
    {
        var t = FuzzCorpus.Create("gguf");
        var (offset, length) = t.Structures["model.gguf"].Strings.First(x => x.Length > 4);
        byte[] bytes = (byte[])t.Files["model.gguf"].Clone();
        bytes[offset + 1] = 0xFF;
        Refused(t, "model.gguf", bytes, "invalid UTF-8");
        Assert.True(length > 0);
    }

    [Fact]
    public void TextDataWithInvalidUtf8()
    {
        var t = FuzzCorpus.Create("data-txt");
        Refused(t, "data.txt", [.. "the cat\n"u8, 0xFF, 0xFE, .. "\n"u8], "invalid UTF-8");
    }

    /// <summary>The known crash and two found ones through the real vkpeft process: exit 2, one line, no stack trace.</summary>
    [Fact]
    public async Task ThroughTheRealCliProcess()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("data.txt"), "the cat sat\n");
        var cases = new List<(string Model, string Expected)>();

        var st = FuzzCorpus.Create("safetensors");
        string hf = Path.Combine(dir.Path, "hf");
        Directory.CreateDirectory(hf);
        LoaderFuzzTests.Write(st, hf, "model.safetensors", Replace(st.Files["model.safetensors"], "model.norm.weight", [.. "model.norm.wei"u8, 0xC3, 0x28, 0xFF]));
        cases.Add((hf, "model.safetensors: header: invalid UTF-8"));

        var l2c = FuzzCorpus.Create("llama2c");
        string l2cDir = Path.Combine(dir.Path, "l2c");
        Directory.CreateDirectory(l2cDir);
        byte[] model = (byte[])l2c.Files["model.bin"].Clone();
        BinaryPrimitives.WriteInt32LittleEndian(model.AsSpan(20), int.MinValue);
        LoaderFuzzTests.Write(l2c, l2cDir, "model.bin", model);
        cases.Add((Path.Combine(l2cDir, "model.bin"), "model.bin: vocab_size"));

        var tj = FuzzCorpus.Create("tokenizer-json");
        string tjDir = Path.Combine(dir.Path, "tj");
        Directory.CreateDirectory(tjDir);
        LoaderFuzzTests.Write(tj, tjDir, "tokenizer.json", tj.Files["tokenizer.json"][..^3]);
        cases.Add((tjDir, "tokenizer.json: json: not valid JSON"));

        foreach (var (modelPath, expected) in cases)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "vkpeft.dll"), "eval", "--model", modelPath, "--data", dir.File("data.txt") })
                psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await p.WaitForExitAsync(timeout.Token);
            string err = await stderr;
            Assert.True(p.ExitCode == 2, $"exit {p.ExitCode}: {err}{await stdout}");
            Assert.Single(err.TrimEnd().Split('\n'));
            Assert.StartsWith("error: ", err);
            Assert.Contains(expected, err);
            Assert.DoesNotContain("   at ", err);
        }
    }
}
