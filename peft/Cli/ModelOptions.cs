// Options shared by the commands that load a model (--model, --tokenizer, --quant) and the loading itself, with a
// progress bar while the base is uploaded and quantized layer by layer.
using System.CommandLine;
using Spectre.Console;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public sealed class ModelOptions
{
    public Option<string> Model { get; } = new("--model") { Description = "Model: llama2.c .bin, Hugging Face directory (config.json + safetensors), or .gguf", Required = true };
    public Option<string?> Tokenizer { get; } = new("--tokenizer") { Description = "Tokenizer file (default: found next to the model)" };
    public Option<bool> SplitSpecialTokens { get; } = new("--split-special-tokens") { Description = "Tokenize special-token text in data and prompts (e.g. <|eot_id|>) as plain text; by default it is the special token, as in Hugging Face" };
    public Option<string?> Quant { get; } = new("--quant") { Description = "Base linear weights on the device: none, nf4, nf4-dq, fp4, fp4-dq, int4" };
    public Option<string> QuantEmbeddings { get; } = new("--quant-embeddings") { Description = "Token embedding and classifier on the device: none (fp32), nf4, nf4-dq, fp4, fp4-dq", DefaultValueFactory = _ => "none" };

    public void AddTo(Command cmd)
    {
        cmd.Options.Add(Model);
        cmd.Options.Add(Tokenizer);
        cmd.Options.Add(SplitSpecialTokens);
        cmd.Options.Add(Quant);
        cmd.Options.Add(QuantEmbeddings);
    }

    /// <summary>The --quant-embeddings value (fp32 by default).</summary>
    public BaseQuant EmbeddingQuant(ParseResult parse)
    {
        var q = BaseQuant.Parse(parse.GetValue(QuantEmbeddings)!);
        if (q.IsInt4) throw new CliUsageException("--quant-embeddings: use none, nf4, nf4-dq, fp4 or fp4-dq");
        return q;
    }

    /// <summary>Loads the host model and its tokenizer (explicit --tokenizer wins); a missing tokenizer is an error.</summary>
    public (LoadedModel Model, ITextTokenizer Tokenizer) LoadHost(ParseResult parse)
    {
        var path = parse.GetValue(Model)!;
        if (!File.Exists(path) && !Directory.Exists(path)) throw new FileNotFoundException($"--model: '{path}' does not exist");
        var loaded = ModelLoader.Load(path);
        ITextTokenizer? tok = loaded.Tokenizer;
        var tokPath = parse.GetValue(Tokenizer);
        if (tokPath != null)
        {
            if (!File.Exists(tokPath)) throw new FileNotFoundException($"--tokenizer: '{tokPath}' does not exist");
            tok = TokenizerFiles.Load(tokPath, loaded.Config.VocabSize, loaded.Config.BosId, loaded.Config.EosId);
        }
        if (parse.GetValue(SplitSpecialTokens) && tok is HfTokenizer hf) tok = hf.WithSplitSpecialTokens(true);
        if (tok == null)
            throw new FileNotFoundException($"no tokenizer found next to '{path}'{(loaded.Source.TokenizerNote is { } n ? $" ({n})" : "")}; pass --tokenizer");
        return (loaded, tok);
    }

    /// <summary>The --quant value, or <paramref name="fallback"/> when not given.</summary>
    public BaseQuant QuantOr(ParseResult parse, BaseQuant fallback, int? blocksize = null)
    {
        var q = parse.GetValue(Quant);
        return q == null ? fallback : BaseQuant.Parse(q, blocksize);
    }

    /// <summary>Uploads the model to the device with a progress bar on stderr.</summary>
    public static DeviceLlama Upload(VulkanContext ctx, LoadedModel m, BaseQuant quant, BaseQuant? embeddingQuant = null)
    {
        DeviceLlama? model = null;
        Progress.Run($"loading {m.Config.NLayers} layers ({quant})", m.Config.NLayers, "layers", tick =>
            model = DeviceLlama.Load(ctx, m.Config, m.Weights, quant, (done, _) => tick(done), embeddingQuant));
        return model!;
    }
}
