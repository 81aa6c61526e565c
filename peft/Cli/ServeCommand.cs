// `vkpeft serve`: loads one base onto the device and serves it and any number of adapters over an OpenAI-compatible
// HTTP API until Ctrl+C (the server itself is VkPeft.Serve).
using System.CommandLine;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Runtime.Vulkan;
using VkPeft.Serve;

namespace VkPeft.Cli;

public static class ServeCommand
{
    public static Command Create()
    {
        var model = new ModelOptions();
        var adapters = new Option<string[]>("--adapter") { Description = "An adapter to serve as NAME=DIR (repeatable); requests choose it with \"model\": \"NAME\"", AllowMultipleArgumentsPerToken = false };
        var adaptersDir = new Option<string?>("--adapters-dir") { Description = "Serve every adapter folder inside DIR, named by its folder name" };
        var name = new Option<string?>("--model-name") { Description = "The base model's name in requests (default: the model's file or folder name)" };
        var host = new Option<string>("--host") { Description = "Address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on (0: any free port)", DefaultValueFactory = _ => 8080 };
        var maxBatch = new Option<int>("--max-batch") { Description = "Sequences decoded together in one step", DefaultValueFactory = _ => 16 };
        var maxContext = new Option<int>("--max-context") { Description = "Most tokens of one sequence, prompt and completion (default: the model's)", DefaultValueFactory = _ => 0 };
        var kvPageSize = new Option<int>("--kv-page-size") { Description = "Tokens per page of the paged KV cache", DefaultValueFactory = _ => 16 };
        var kvPages = new Option<int>("--kv-pages") { Description = "Pages of the KV cache pool (default: enough for --max-batch sequences of --max-context tokens)", DefaultValueFactory = _ => 0 };
        var memoryBudget = new Option<string?>("--memory-budget") { Description = "Device memory resident adapters and the KV pages of running sequences share (default: --adapter-budget plus the whole KV pool)" };
        var maxQueue = new Option<int>("--max-queue") { Description = "Requests that may wait for a slot; beyond it the server answers 503 with Retry-After", DefaultValueFactory = _ => 256 };
        var adapterBudget = new Option<string>("--adapter-budget") { Description = "Device memory for resident adapters (least recently used ones are evicted beyond it)", DefaultValueFactory = _ => "512MiB" };
        var timeout = new Option<int>("--request-timeout") { Description = "Seconds a request may take before it is cancelled", DefaultValueFactory = _ => 600 };
        var gatheredRank = new Option<int>("--gathered-lora-rank") { Description = "Plain-LoRA adapters up to this rank are batched by the gathered kernels (0: every adapter runs its own runtime)", DefaultValueFactory = _ => 16 };
        var cmd = new Command("serve", "Serve a model and its adapters over an OpenAI-compatible HTTP API, batching requests for different adapters together")
        {
            adapters, adaptersDir, name, host, port, maxBatch, maxContext, kvPageSize, kvPages, memoryBudget, maxQueue, adapterBudget, timeout, gatheredRank,
        };
        model.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            var list = new List<(string Name, string Dir)>();
            foreach (var spec in parse.GetValue(adapters) ?? [])
            {
                int eq = spec.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0 || eq == spec.Length - 1) throw new CliUsageException($"--adapter: expected NAME=DIR, got '{spec}'");
                list.Add((spec[..eq], spec[(eq + 1)..]));
            }
            if (parse.GetValue(adaptersDir) is { } dir)
            {
                if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"--adapters-dir: '{dir}' is not a directory");
                foreach (var sub in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                    if (File.Exists(Path.Combine(sub, AdapterIO.VkPeftConfigFile)) || File.Exists(Path.Combine(sub, AdapterIO.PeftConfigFile)))
                        list.Add((Path.GetFileName(sub), sub));
            }
            int seconds = parse.GetValue(timeout);
            if (seconds <= 0) throw new CliUsageException($"--request-timeout must be ≥ 1, got {seconds}");
            var modelPath = parse.GetValue(model.Model)!;
            var options = new ServeOptions
            {
                BaseName = parse.GetValue(name) ?? Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelPath))),
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                MaxBatch = parse.GetValue(maxBatch),
                MaxContext = parse.GetValue(maxContext),
                KvPageSize = parse.GetValue(kvPageSize),
                KvPages = parse.GetValue(kvPages),
                MemoryBudgetBytes = parse.GetValue(memoryBudget) is { } mb ? (long)ByteSize.Parse(mb, "--memory-budget") : 0,
                MaxQueue = parse.GetValue(maxQueue),
                AdapterBudgetBytes = (long)ByteSize.Parse(parse.GetValue(adapterBudget)!, "--adapter-budget"),
                RequestTimeout = TimeSpan.FromSeconds(seconds),
                GatheredLoraRank = parse.GetValue(gatheredRank),
            };
            options.Validate();
            var (loaded, tok) = model.LoadHost(parse);
            // The base is held as --quant says, else as the first adapter was trained against, else fp32.
            var quant = parse.GetValue(model.Quant) != null ? model.QuantOr(parse, BaseQuant.None)
                : list.Count > 0 ? AdapterIO.Load(list[0].Dir, loaded.Config).Config.BaseQuant : BaseQuant.None;
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            using var device = ModelOptions.Upload(ctx, loaded, quant, model.EmbeddingQuant(parse));
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            return Run(device, tok, quant, list, options, stop.Token).GetAwaiter().GetResult();
        });
        return cmd;
    }

    private static async Task<int> Run(DeviceLlama device, VkPeft.Peft.Tokenizers.ITextTokenizer tok, BaseQuant quant, List<(string Name, string Dir)> adapters,
        ServeOptions options, CancellationToken stop)
    {
        var server = await ServeHost.StartAsync(device, tok, quant, adapters, options).ConfigureAwait(false);
        await using (server.ConfigureAwait(false))
        {
            Console.Error.WriteLine($"serving '{options.BaseName}' ({quant}) and {adapters.Count} adapter(s) on {server.Address} " +
                $"(batch {options.MaxBatch}, context {server.MaxContext}, KV cache {server.KvCache.Pages} pages of {server.KvCache.PageSize} tokens); Ctrl+C stops");
            await server.RunUntilAsync(stop).ConfigureAwait(false);
        }
        return 0;
    }
}
