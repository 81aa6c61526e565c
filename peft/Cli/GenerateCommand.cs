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
        var chat = new Option<bool>("--chat") { Description = "Send --prompt as a user message through the tokenizer's chat template and print the reply" };
        var cmd = new Command("generate", "Continue a prompt with a model (and optionally a trained adapter)") { adapter, prompt, maxTokens, temperature, topP, seed, chat };
        model.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            int n = parse.GetValue(maxTokens);
            if (n < 0) throw new CliUsageException($"--max-tokens must be ≥ 0, got {n}");
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topP), parse.GetValue(seed));
            sampling.Validate();
            var (host, tok) = model.LoadHost(parse);
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            int[] ids;
            int? endOfTurn = null;
            bool asChat = parse.GetValue(chat);
            if (asChat)
            {
                var template = ChatTemplate.Of(tok);
                var hf = (HfTokenizer)tok;
                ids = hf.Encode(template.Render([new ChatMessage("user", parse.GetValue(prompt)!)], addGenerationPrompt: true), addSpecialTokens: false);
                endOfTurn = template.EndOfTurnToken(hf);
            }
            else ids = tok.Encode(parse.GetValue(prompt)!, bos: true);
            int maxSeq = Math.Min(host.Config.MaxSeqLen > 0 ? host.Config.MaxSeqLen : 2048, ids.Length + n);
            using var session = AdapterSession.Open(ctx, parse.GetValue(adapter), host, model.QuantOr(parse, BaseQuant.None), parse.GetValue(model.Quant) != null, Math.Max(maxSeq, ids.Length), model.EmbeddingQuant(parse));
            // Virtual tokens or a prefix take the first positions of the context.
            int extraRows = VkPeft.Peft.Engine.VirtualTokenRows.ExtraRows(session.Adapter);
            if (host.Config.MaxSeqLen > 0) maxSeq = Math.Min(maxSeq, host.Config.MaxSeqLen - extraRows);
            using var runner = new LlamaRunner(session.Model, 1, Math.Max(maxSeq, ids.Length), kvCache: true, adapter: session.Adapter);
            if (!asChat) Console.Write(tok.Decode(ids));
            var stream = new StreamingDecoder(tok, ids[^1]);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var all = new Generator(runner).Generate(ids, n, sampling, tok.Eos, id => Console.Write(stream.Push(id)),
                endOfTurn is { } eot ? [eot] : null);
            Console.WriteLine(stream.Flush());
            int generated = all.Length - ids.Length;
            Console.Error.WriteLine($"[{generated} tokens in {sw.Elapsed.TotalSeconds:F2} s, {generated / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):F1} tokens/s on {ctx.Caps.Name}]");
            if (parse.GetValue(CliApp.ProfileOption)) Console.Error.WriteLine(ctx.Commands.Profile.Format());
            return 0;
        });
        return cmd;
    }
}
