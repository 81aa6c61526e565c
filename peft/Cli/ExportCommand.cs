// `vkpeft export`: writes a trained adapter (PEFT, vkpeft, GGUF LoRA) or a merged model (Hugging Face safetensors incl.
// bitsandbytes NF4 and INT4, GGUF, llama2.c), reports what it wrote and, with --check-data, the NLL the export changes.
using System.CommandLine;
using System.Globalization;
using VkPeft.Peft.Data;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class ExportCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var adapter = new Option<string?>("--adapter") { Description = "Adapter directory to export or merge" };
        var output = new Option<string>("--out") { Description = "Output file or directory", Required = true };
        var format = new Option<string>("--format") { Description = "peft, vkpeft, gguf-lora (adapters); safetensors, gguf, llama2c (merged models)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "f32, f16, bf16, nf4, nf4-dq, int4, q8_0, q4_0, q4_1", DefaultValueFactory = _ => "f32" };
        var mergeFrom = new Option<string>("--merge-from") { Description = "dequantized (the base the adapter trained against) or original", DefaultValueFactory = _ => "dequantized" };
        var force = new Option<bool>("--force") { Description = "Replace an existing output" };
        var embeddingsDType = new Option<string?>("--embeddings-dtype") { Description = "Token embedding and classifier dtype (default f32, the precision the model ran with)" };
        var blocksize = new Option<int?>("--blocksize") { Description = "With --quant and no --adapter: its block size (nf4/fp4, default 64) or group size (int4, default 32)" };
        var checkData = new Option<string?>("--check-data") { Description = "Compare mean NLL of base+adapter and of the exported model on this data" };
        var cmd = new Command("export", "Export an adapter or a merged (and optionally quantized) model") { adapter, output, format, dtype, mergeFrom, force, checkData, blocksize, embeddingsDType };
        model.Quant.Description = "Without --adapter: write the base dequantized from this quantization (nf4-dq, int4, ...), the base an " +
            "adapter trained on it pairs with (with --adapter the adapter records its base quantization)";
        model.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            var (host, tok) = model.LoadHost(parse);
            AdapterWeights? weights = null;
            var adapterDir = parse.GetValue(adapter);
            if (adapterDir != null) weights = AdapterIO.Load(adapterDir, host.Config);
            var options = new ExportOptions
            {
                Format = ExportOptions.ParseFormat(parse.GetValue(format)!),
                DType = ExportOptions.ParseDType(parse.GetValue(dtype)!),
                MergeFrom = parse.GetValue(mergeFrom)!.ToLowerInvariant() switch
                {
                    "dequantized" => MergeFrom.Dequantized,
                    "original" => MergeFrom.Original,
                    var other => throw new CliUsageException($"--merge-from: unknown value '{other}' (use dequantized or original)"),
                },
                Force = parse.GetValue(force),
                OutPath = parse.GetValue(output)!,
                EmbeddingsDType = parse.GetValue(embeddingsDType) is { } e ? ParseEmbeddingsDType(e) : null,
            };
            if (weights == null && options.Format is ExportFormat.Safetensors or ExportFormat.Gguf or ExportFormat.Llama2c)
            {
                // Without an adapter, --merge-from dequantized names the base an adapter trained against: --quant says which.
                bool mergeFromGiven = parse.GetResult(mergeFrom) is { Implicit: false };
                if (parse.GetValue(model.Quant) is not null)
                    options = options with { DequantizeBase = model.QuantOr(parse, BaseQuant.None, parse.GetValue(blocksize)) };
                else if (mergeFromGiven && options.MergeFrom == MergeFrom.Dequantized)
                    throw new CliUsageException("--merge-from dequantized without --adapter needs --quant (the base quantization to dequantize, e.g. nf4-dq)");
            }
            if (weights == null && options.Format is ExportFormat.Peft or ExportFormat.VkPeft or ExportFormat.GgufLora)
                throw new CliUsageException($"--format {parse.GetValue(format)} exports an adapter: pass --adapter DIR");
            var report = Exporter.Export(host, weights, options);
            Console.WriteLine(report.Summary());
            if (options.Format == ExportFormat.GgufLora && weights!.Config.BaseQuant.Type != "none")
            {
                // llama.cpp adds the adapter to whatever base GGUF it loads; it was trained against the dequantized base.
                var bq = weights.Config.BaseQuant;
                Console.WriteLine($"this adapter pairs with the base it was trained against: {parse.GetValue(model.Model)} dequantized from {bq.Type} " +
                    $"(blocksize {bq.Blocksize}); a GGUF of the original weights changes its meaning. Export that base with:");
                Console.WriteLine($"  vkpeft export --model {parse.GetValue(model.Model)} --format gguf --merge-from dequantized --quant {bq.Type}" +
                    $" --blocksize {bq.Blocksize} --out base.gguf");
            }
            var check = parse.GetValue(checkData);
            if (check != null)
            {
                if (options.Format is ExportFormat.Peft or ExportFormat.VkPeft or ExportFormat.GgufLora)
                    throw new CliUsageException("--check-data compares a merged model; it does not apply to adapter exports");
                CompareNll(parse, host, tok, adapterDir, options.OutPath, check);
            }
            return 0;
        });
        return cmd;
    }

    private static ExportDType ParseEmbeddingsDType(string text)
    {
        try
        {
            return ExportOptions.ParseDType(text);
        }
        catch (FormatException)
        {
            throw new CliUsageException($"--embeddings-dtype: unknown dtype '{text}' (use f32, f16, bf16, q8_0, q4_0, q4_1)");
        }
    }

    private static void CompareNll(ParseResult parse, LoadedModel host, Peft.Tokenizers.ITextTokenizer tok, string? adapterDir, string exported, string data)
    {
        var docs = TextDataset.Read(data).Select(r => TextDataset.Tokenize(tok, r).Tokens).ToList();
        int L = Math.Min(256, host.Config.MaxSeqLen > 0 ? host.Config.MaxSeqLen : 256);
        var windows = Evaluator.Windows(docs, L);
        using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
        double Eval(Func<AdapterSession> open)
        {
            using var s = open();
            using var r = new LlamaRunner(s.Model, Math.Min(8, windows.Count), L, kvCache: false, adapter: s.Adapter);
            return Evaluator.Evaluate(r, windows).MeanNll;
        }
        double before = Eval(() => AdapterSession.Open(ctx, adapterDir, host, BaseQuant.None, quantGiven: false, 8 * L));
        var back = ModelLoader.Load(exported);
        double after = Eval(() => AdapterSession.Open(ctx, null, back, BaseQuant.None, quantGiven: true, 8 * L));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"check on {windows.Count} windows of {data}: mean NLL base{(adapterDir != null ? "+adapter" : "")} {before:F6}, exported model {after:F6} (Δ {after - before:+0.000000;-0.000000})"));
    }
}
