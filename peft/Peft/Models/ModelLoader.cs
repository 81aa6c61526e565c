// One entry point for every supported model source: detects llama2.c .bin, Hugging Face folders and GGUF files,
// loads config and float32 weights, and finds the tokenizer that goes with the model.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Models;

public enum ModelSourceFormat
{
    Llama2cV0,
    Llama2cV1,
    HuggingFace,
    Gguf,
}

/// <summary>Where a model came from; TokenizerNote says why no tokenizer was found when Tokenizer is null.</summary>
public sealed record ModelSourceInfo(ModelSourceFormat Format, string Path, string? TokenizerPath, string? TokenizerNote);

public sealed record LoadedModel(LlamaConfig Config, LlamaWeights Weights, ITextTokenizer? Tokenizer, ModelSourceInfo Source);

public static class ModelLoader
{
    /// <summary>Detects the format of <paramref name="path"/> (file or folder) and loads it.</summary>
    public static LoadedModel Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Directory.Exists(path))
        {
            if (File.Exists(System.IO.Path.Combine(path, HfCheckpoint.ConfigFile))) return LoadHf(path);
            var ggufs = Directory.GetFiles(path, "*.gguf");
            if (ggufs.Length == 1) return LoadGguf(ggufs[0]);
            throw new ModelFormatException(path, HfCheckpoint.ConfigFile, "folder has no config.json (HF model) and not exactly one .gguf file");
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"model path not found: {path}", path);

        string name = System.IO.Path.GetFileName(path);
        if (name.Equals(HfCheckpoint.ConfigFile, StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            || name.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase))
            return LoadHf(path);
        if (StartsWithGgufMagic(path) || name.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return LoadGguf(path);
        return LoadLlama2c(path);
    }

    private static bool StartsWithGgufMagic(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> b = stackalloc byte[4];
        return fs.ReadAtLeast(b, 4, throwOnEndOfStream: false) == 4 && BitConverter.ToUInt32(b) == GgufFile.Magic;
    }

    private static LoadedModel LoadLlama2c(string path)
    {
        int version = Llama2cCheckpoint.DetectVersion(path);
        var (config, weights) = Llama2cCheckpoint.Read(path);
        var (tokPath, note) = FindLlama2cTokenizer(path);
        ITextTokenizer? tok = tokPath is null ? null : Llama2cTokenizer.Load(tokPath, config.VocabSize, config.BosId, config.EosId);
        var format = version == 0 ? ModelSourceFormat.Llama2cV0 : ModelSourceFormat.Llama2cV1;
        return new LoadedModel(config, weights, tok, new ModelSourceInfo(format, System.IO.Path.GetFullPath(path), tokPath, note));
    }

    /// <summary>tokenizer.bin next to the model, else the only tok*.bin there.</summary>
    public static (string? Path, string? Note) FindLlama2cTokenizer(string modelPath)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(modelPath))!;
        string standard = System.IO.Path.Combine(dir, "tokenizer.bin");
        if (File.Exists(standard)) return (standard, null);
        string self = System.IO.Path.GetFullPath(modelPath);
        var candidates = Directory.GetFiles(dir, "tok*.bin").Where(p => System.IO.Path.GetFullPath(p) != self).ToArray();
        return candidates.Length switch
        {
            1 => (candidates[0], null),
            0 => (null, $"no tokenizer.bin or tok*.bin next to {System.IO.Path.GetFileName(modelPath)}"),
            _ => (null, $"several tok*.bin files next to the model ({string.Join(", ", candidates.Select(System.IO.Path.GetFileName))}); name one tokenizer.bin"),
        };
    }

    private static LoadedModel LoadHf(string path)
    {
        string dir = HfCheckpoint.ResolveDirectory(path);
        var (config, weights) = HfCheckpoint.Load(dir);
        var (tok, tokPath, note) = FindHfTokenizer(dir, config);
        return new LoadedModel(config, weights, tok, new ModelSourceInfo(ModelSourceFormat.HuggingFace, dir, tokPath, note));
    }

    /// <summary>tokenizer.json in a Hugging Face folder, else tokenizer.model; the note says why there is none.</summary>
    private static (ITextTokenizer? Tokenizer, string? Path, string? Note) FindHfTokenizer(string dir, LlamaConfig config)
    {
        ITextTokenizer? tok = null;
        string? tokPath = null, note = null;
        string json = System.IO.Path.Combine(dir, "tokenizer.json");
        string spm = System.IO.Path.Combine(dir, "tokenizer.model");
        if (File.Exists(json))
        {
            try
            {
                tok = TokenizerFiles.Load(json, config.VocabSize, config.BosId, config.EosId);
                tokPath = json;
            }
            catch (ModelFormatException e) when (e.Field == "model.type")
            {
                note = e.Message;
            }
        }
        if (tok is null && File.Exists(spm))
        {
            tok = HfTokenizers.LoadSentencePiece(spm, config.BosId, config.EosId);
            tokPath = spm;
            note = null;
        }
        if (tok is null) note ??= "no tokenizer.json or tokenizer.model in the folder";
        if (tok is not null && tok.VocabSize > config.VocabSize)
            throw new ModelFormatException(tokPath!, "vocab_size",
                $"tokenizer has {tok.VocabSize} tokens but the model's vocab_size is {config.VocabSize}");
        return (tok, tokPath, note);
    }

    /// <summary>
    /// The tokenizer that goes with a model, reading only configuration (no weights) for Hugging Face folders and GGUF
    /// files; throws <see cref="FileNotFoundException"/> when the model has none.
    /// </summary>
    public static ITextTokenizer LoadTokenizer(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        ITextTokenizer? tok;
        string? note;
        bool hf = Directory.Exists(path) ? File.Exists(System.IO.Path.Combine(path, HfCheckpoint.ConfigFile))
            : System.IO.Path.GetFileName(path).Equals(HfCheckpoint.ConfigFile, StringComparison.OrdinalIgnoreCase)
              || path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase);
        bool gguf = !hf && File.Exists(path) && (StartsWithGgufMagic(path) || path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase));
        if (hf)
        {
            string dir = HfCheckpoint.ResolveDirectory(path);
            (tok, _, note) = FindHfTokenizer(dir, HfCheckpoint.ReadConfig(System.IO.Path.Combine(dir, HfCheckpoint.ConfigFile)));
        }
        else if (gguf)
        {
            var f = GgufFile.Open(path);
            tok = GgufLlama.LoadTokenizer(f, GgufLlama.ReadConfig(f).VocabSize);
            note = "the GGUF file embeds no tokenizer.ggml.* vocabulary";
        }
        else
        {
            var m = Load(path);
            (tok, note) = (m.Tokenizer, m.Source.TokenizerNote);
        }
        return tok ?? throw new SettingFileNotFoundException(new SettingMessage($"no tokenizer found for '{path}' ({note}); pass {TokenizerSettings.Tokenizer}"));
    }

    private static LoadedModel LoadGguf(string path)
    {
        var f = GgufFile.Open(path);
        var (config, weights) = GgufLlama.Load(f);
        var tok = GgufLlama.LoadTokenizer(f, config.VocabSize);
        string full = System.IO.Path.GetFullPath(path);
        return new LoadedModel(config, weights, tok,
            new ModelSourceInfo(ModelSourceFormat.Gguf, full, tok is null ? null : full, tok is null ? "the GGUF file embeds no tokenizer.ggml.* vocabulary" : null));
    }
}
