// `vkpeft generate`: prints the prompt and streams the continuation as text, a character never split across tokens
// (greedy at temperature 0).
using System.CommandLine;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var adapter = new Option<string?>("--adapter") { Description = "Adapter directory trained by 'vkpeft train' (or a PEFT adapter)" };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Tokens to generate", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 42 };
        var cmd = new Command("generate", "Continue a prompt with a model (and optionally a trained adapter)") { adapter, prompt, maxTokens, temperature, topP, seed };
        model.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            int n = parse.GetValue(maxTokens);
            if (n < 0) throw new CliUsageException($"--max-tokens must be ≥ 0, got {n}");
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topP), parse.GetValue(seed));
            sampling.Validate();
            var (host, tok) = model.LoadHost(parse);
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            var ids = tok.Encode(parse.GetValue(prompt)!, bos: true);
            int maxSeq = Math.Min(host.Config.MaxSeqLen > 0 ? host.Config.MaxSeqLen : 2048, ids.Length + n);
            using var session = AdapterSession.Open(ctx, parse.GetValue(adapter), host, model.QuantOr(parse, BaseQuant.None), parse.GetValue(model.Quant) != null, Math.Max(maxSeq, ids.Length), model.EmbeddingQuant(parse));
            using var runner = new LlamaRunner(session.Model, 1, Math.Max(maxSeq, ids.Length), kvCache: true) { Adapter = session.Adapter };
            Console.Write(tok.Decode(ids));
            var stream = new StreamingDecoder(tok, ids[^1]);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var all = new Generator(runner).Generate(ids, n, sampling, tok.Eos, id => Console.Write(stream.Push(id)));
            Console.WriteLine(stream.Flush());
            int generated = all.Length - ids.Length;
            Console.Error.WriteLine($"[{generated} tokens in {sw.Elapsed.TotalSeconds:F2} s, {generated / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):F1} tokens/s on {ctx.Caps.Name}]");
            if (parse.GetValue(CliApp.ProfileOption)) Console.Error.WriteLine(ctx.Commands.Profile.Format());
            return 0;
        });
        return cmd;
    }
}
