// `vkpeft eval`: mean negative log-likelihood and perplexity of a data file (token-weighted over predicted tokens).
using System.CommandLine;
using System.Text.Json.Nodes;
using VkPeft.Peft.Data;
using VkPeft.Peft.Engine;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class EvalCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var adapter = new Option<string?>("--adapter") { Description = "Adapter directory trained by 'vkpeft train' (or a PEFT adapter)" };
        var data = new Option<string>("--data") { Description = ".txt (one document per line) or .jsonl with a \"text\" field", Required = true };
        var seqLen = new Option<int>("--seq-len") { Description = "Window of predicted tokens", DefaultValueFactory = _ => 256 };
        var batch = new Option<int>("--batch") { Description = "Windows per device batch", DefaultValueFactory = _ => 8 };
        var json = new Option<bool>("--json") { Description = "Print {\"mean_nll\", \"perplexity\", \"tokens\"}" };
        var cmd = new Command("eval", "Mean negative log-likelihood and perplexity of a data file") { adapter, data, seqLen, batch, json };
        model.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            int L = parse.GetValue(seqLen), B = parse.GetValue(batch);
            if (L < 1) throw new CliUsageException($"--seq-len must be ≥ 1, got {L}");
            if (B < 1) throw new CliUsageException($"--batch must be ≥ 1, got {B}");
            var (host, tok) = model.LoadHost(parse);
            if (host.Config.MaxSeqLen > 0 && L > host.Config.MaxSeqLen) L = host.Config.MaxSeqLen;
            var records = TextDataset.Read(parse.GetValue(data)!);
            var docs = records.Select(r => TextDataset.Tokenize(tok, r)).ToList();
            var windows = Evaluator.Windows(docs.Select(d => d.Tokens), L);
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            using var session = AdapterSession.Open(ctx, parse.GetValue(adapter), host, model.QuantOr(parse, BaseQuant.None), parse.GetValue(model.Quant) != null, Math.Min(B, windows.Count) * L, model.EmbeddingQuant(parse));
            using var runner = new LlamaRunner(session.Model, Math.Min(B, windows.Count), L, kvCache: false, adapter: session.Adapter);
            EvalResult result = null!;
            Progress.Run("evaluating", windows.Count, "windows", tick => result = Evaluator.Evaluate(runner, windows, (d, _) => tick(d)));
            if (parse.GetValue(json))
                Console.WriteLine(new JsonObject { ["mean_nll"] = result.MeanNll, ["perplexity"] = result.Perplexity, ["tokens"] = result.Tokens }.ToJsonString());
            else
                Console.WriteLine($"mean NLL {result.MeanNll:F6}  perplexity {result.Perplexity:F4}  over {result.Tokens} predicted tokens");
            return 0;
        });
        return cmd;
    }
}
