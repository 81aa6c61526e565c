// `./vkpeft bench serve`: aggregate tokens/s of `vkpeft serve` with 1, 8 and 64 distinct LoRA adapters under concurrent
// streaming clients (gathered pools, and 64 adapters through their own runtimes for comparison), against one request at
// a time through the single-sequence generation path; p50/p99 time to first token and inter-token latency (server-sent
// event gaps); memory: adapter bytes resident, and the paged KV cache's peak pages in use against its pool. Each server
// case is warmed up, then run --repeats times; the run with the median tokens/s is reported (loaded machines swing).
using System.CommandLine;
using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;
using VkPeft.Serve;

namespace VkPeft.Bench;

public sealed record ServeRow(string Case, int Adapters, int Clients, int Requests, long Tokens, double Seconds, double TokensPerSecond,
    double TtftP50, double TtftP99, double ItlP50, double ItlP99, long AdapterBytes, long KvPeakBytes = 0, long KvPoolBytes = 0);

public static class ServeBench
{
    private static readonly string[] Prompts = ["Once upon a time", "The little dog", "Lily and Tom went to the park", "One day, a bird"];

    public static Command Create(Option<string?> device, Option<bool> json)
    {
        var stories = new Option<string?>("--stories") { Description = "stories260K.bin (default: the shared copy next to the repository)" };
        var tiny = new Option<int>("--tiny-layers") { Description = "Also run a TinyLlama-shaped random nf4-dq model with this many layers (0: stories260K only)", DefaultValueFactory = _ => 0 };
        var clients = new Option<int>("--clients") { Description = "Concurrent clients", DefaultValueFactory = _ => 16 };
        var perClient = new Option<int>("--requests") { Description = "Requests per client", DefaultValueFactory = _ => 4 };
        var tokens = new Option<int>("--tokens") { Description = "max_tokens per request", DefaultValueFactory = _ => 48 };
        var repeats = new Option<int>("--repeats") { Description = "Runs per server case (the median tokens/s is reported)", DefaultValueFactory = _ => 3 };
        var cmd = new Command("serve", "Tokens/s and latency of vkpeft serve with 1, 8 and 64 adapters under concurrent clients") { stories, tiny, clients, perClient, tokens, repeats };
        cmd.SetAction(parse =>
        {
            bool asJson = parse.GetValue(json);
            int runs = parse.GetValue(repeats);
            if (runs < 1) throw new ArgumentException($"--repeats must be ≥ 1, got {runs}");
            void Log(string m) { if (!asJson) Console.Error.WriteLine(m); }
            using var ctx = new VulkanContext(Program.Options(parse.GetValue(device)));
            var rows = new List<ServeRow>();
            var models = new List<(string Name, LlamaConfig Config, LlamaWeights Weights)> { BenchModels.Stories(parse.GetValue(stories)) };
            if (parse.GetValue(tiny) > 0) models.Add(BenchModels.TinyLlama(parse.GetValue(tiny)));
            foreach (var m in models)
                rows.AddRange(Run(ctx, m.Name, m.Config, m.Weights, parse.GetValue(clients), parse.GetValue(perClient), parse.GetValue(tokens), runs, Log)
                    .GetAwaiter().GetResult());
            if (asJson) Console.WriteLine(new JsonArray([.. rows.Select(r => JsonSerializer.SerializeToNode(r))]).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            else Print(rows, ctx.Caps.Name);
            return 0;
        });
        return cmd;
    }

    private static async Task<List<ServeRow>> Run(VulkanContext ctx, string name, LlamaConfig c, LlamaWeights w, int clients, int perClient, int maxTokens, int repeats,
        Action<string> log)
    {
        var quant = BaseQuant.Parse("nf4-dq");
        string dir = Directory.CreateTempSubdirectory("vkpeft-bench-serve-").FullName;
        var rows = new List<ServeRow>();
        try
        {
            log($"{name}: writing 64 random LoRA adapters (r = 8, all linears)...");
            var adapters = Enumerable.Range(0, 64).Select(i => ($"lora-{i}", WriteAdapter(dir, $"lora-{i}", c, quant, i))).ToList();
            log($"{name}: loading the base ({quant})...");
            using var model = DeviceLlama.Load(ctx, c, w, quant);
            int context = Math.Min(c.MaxSeqLen > 0 ? c.MaxSeqLen : 2048, 16 + maxTokens + 8);
            rows.Add(Sequential(model, adapters[0].Item2, clients * perClient, maxTokens, log, name));
            foreach (var (count, gathered) in new[] { (1, true), (8, true), (64, true), (64, false) })
            {
                string label = $"{name}, {count} adapter{(count == 1 ? "" : "s")}{(gathered ? "" : ", own runtimes")}";
                log($"{label}: {clients} clients × {perClient} requests of {maxTokens} tokens...");
                var options = new ServeOptions
                {
                    BaseName = "base", Port = 0, MaxBatch = clients, MaxContext = context, MaxQueue = clients * perClient,
                    AdapterBudgetBytes = 4L << 30, GatheredLoraRank = gathered ? 8 : 0, GatheredLoraSlots = 64,
                };
                var server = await ServeHost.StartAsync(model, new ByteTokens(c.VocabSize), quant, adapters.Take(count).ToList(), options);
                await using (server.ConfigureAwait(false))
                {
                    await Warm(server, count);
                    var runs = new List<ServeRow>();
                    for (int r = 0; r < repeats; r++) runs.Add(await Load(server, label, count, clients, perClient, maxTokens));
                    var median = runs.OrderBy(x => x.TokensPerSecond).ElementAt(runs.Count / 2);
                    log($"{label}: {string.Join(", ", runs.Select(x => x.TokensPerSecond.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))} tokens/s");
                    rows.Add(median);
                }
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
        return rows;
    }

    /// <summary>A tokenizer for the benchmark: one token per byte of the prompt (below the vocabulary), text decoded as '.'.</summary>
    private sealed class ByteTokens(int vocab) : VkPeft.Peft.Tokenizers.ITextTokenizer
    {
        public int VocabSize => vocab;
        public int Bos => 1;
        public int Eos => -1;   // never stops early: every request generates max_tokens
        public int[] Encode(string text, bool bos = true, bool eos = false) => [.. (bos ? [1] : Array.Empty<int>()), .. text.Select(ch => 3 + ch % (vocab - 3))];
        public string Decode(ReadOnlySpan<int> ids) => new('.', ids.Length);
        public string DecodeToken(int prev, int id) => ".";
    }

    private static string WriteAdapter(string root, string name, LlamaConfig c, BaseQuant quant, int seed)
    {
        var cfg = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = 16 }, Targets = Enum.GetValues<TargetModule>(), BaseQuant = quant, BaseModel = "bench" };
        var rng = new Random(seed);
        var a = new AdapterWeights(cfg);
        float[] U(int n, float s) => [.. Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * s))];
        foreach (var t in cfg.Targets)
        {
            var (outF, inF) = c.LinearShape(t);
            for (int l = 0; l < c.NLayers; l++)
            {
                a.Tensors[AdapterWeights.LoraA(l, t)] = new HostTensor(U(8 * inF, 0.3f), [8, inF]);
                a.Tensors[AdapterWeights.LoraB(l, t)] = new HostTensor(U(outF * 8, 0.05f), [outF, 8]);
            }
        }
        string dir = Path.Combine(root, name);
        AdapterIO.SaveVkPeft(dir, a, c);
        return dir;
    }

    /// <summary>The same number of requests one at a time through the single-sequence path (what `generate` runs).</summary>
    private static ServeRow Sequential(DeviceLlama model, string adapterDir, int requests, int maxTokens, Action<string> log, string name)
    {
        log($"{name}: {requests} requests one at a time (generate's path)...");
        var tok = new ByteTokens(model.Config.VocabSize);
        using var adapter = InferenceAdapter.Create(model.Context, model.Config, AdapterIO.Load(adapterDir, model.Config), 64 + maxTokens);
        {
            var ttft = new List<double>();
            var itl = new List<double>();
            long produced = 0;
            var total = Stopwatch.StartNew();
            for (int r = 0; r < requests; r++)
            {
                var ids = tok.Encode(Prompts[r % Prompts.Length]);
                using var runner = new LlamaRunner(model, 1, ids.Length + maxTokens, kvCache: true) { Adapter = adapter.Runtime };
                var sw = Stopwatch.StartNew();
                double last = 0;
                new Generator(runner).Generate(ids, maxTokens, new SamplingOptions(), null, _ =>
                {
                    double now = sw.Elapsed.TotalSeconds;
                    (produced++ == 0 || last == 0 ? ttft : itl).Add(now - last);
                    last = now;
                });
            }
            double seconds = total.Elapsed.TotalSeconds;
            return new ServeRow($"{name}, one at a time (generate)", 1, 1, requests, produced, seconds, produced / seconds,
                Pct(ttft, 50), Pct(ttft, 99), Pct(itl, 50), Pct(itl, 99), adapter.Bytes);
        }
    }

    private static async Task<ServeRow> Load(ServeHost server, string label, int adapters, int clients, int perClient, int maxTokens)
    {
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(30) };
        long before = server.Metrics.GeneratedTokens;
        var ttft = new List<double>();
        var itl = new List<double>();
        var total = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, clients).Select(async client =>
        {
            for (int r = 0; r < perClient; r++)
            {
                int index = client * perClient + r;
                var body = new { model = $"lora-{index % adapters}", prompt = Prompts[index % Prompts.Length], max_tokens = maxTokens, temperature = 0, stream = true };
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = JsonContent.Create(body) };
                var sw = Stopwatch.StartNew();
                using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                response.EnsureSuccessStatusCode();
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                double last = -1;
                var mine = new List<(bool First, double Gap)>();
                while (await reader.ReadLineAsync() is { } line)
                {
                    if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
                    double now = sw.Elapsed.TotalSeconds;
                    mine.Add((last < 0, last < 0 ? now : now - last));
                    last = now;
                }
                lock (ttft)
                    foreach (var (first, gap) in mine) (first ? ttft : itl).Add(gap);
            }
        }));
        double seconds = total.Elapsed.TotalSeconds;
        long produced = server.Metrics.GeneratedTokens - before;
        return new ServeRow(label, adapters, clients, clients * perClient, produced, seconds, produced / seconds,
            Pct(ttft, 50), Pct(ttft, 99), Pct(itl, 50), Pct(itl, 99), server.Adapters.ResidentBytes,
            server.KvCache.PeakUsed * server.KvCache.PageBytes, server.KvCache.Pages * server.KvCache.PageBytes);
    }

    /// <summary>Warm-up: one request per adapter (compiles pipelines, loads the adapters), then a batch-sized burst.</summary>
    private static async Task Warm(ServeHost server, int adapters)
    {
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(30) };
        await Task.WhenAll(Enumerable.Range(0, adapters).Select(i =>
            http.PostAsJsonAsync("/v1/completions", new { model = $"lora-{i}", prompt = "Once", max_tokens = 2, temperature = 0 })));
        await Task.WhenAll(Enumerable.Range(0, 16).Select(i =>
            http.PostAsJsonAsync("/v1/completions", new { model = $"lora-{i % adapters}", prompt = Prompts[i % Prompts.Length], max_tokens = 8, temperature = 0 })));
    }

    private static double Pct(List<double> v, double p)
    {
        if (v.Count == 0) return 0;
        var s = v.Order().ToArray();
        return s[Math.Min(s.Length - 1, (int)Math.Ceiling(p / 100 * s.Length) - 1)];
    }

    private static void Print(List<ServeRow> rows, string device)
    {
        Console.WriteLine($"vkpeft serve on {device} (ms; ITL = gap between streamed tokens)");
        Console.WriteLine($"{"case",-48} {"tok/s",8} {"x seq",6} {"TTFT p50",9} {"p99",8} {"ITL p50",8} {"p99",8} {"adapter MiB",11} {"KV MiB peak/pool",17}");
        static string Model(ServeRow r) => r.Case[..r.Case.IndexOf(',', StringComparison.Ordinal)];
        foreach (var r in rows)
        {
            // "x seq": against one request at a time on the same model.
            double seq = rows.FirstOrDefault(o => o.Clients == 1 && Model(o) == Model(r))?.TokensPerSecond ?? 0;
            Console.WriteLine($"{r.Case,-48} {r.TokensPerSecond,8:F1} {(seq > 0 ? r.TokensPerSecond / seq : 0),6:F2} {r.TtftP50 * 1e3,9:F1} {r.TtftP99 * 1e3,8:F1} {r.ItlP50 * 1e3,8:F1} {r.ItlP99 * 1e3,8:F1} {r.AdapterBytes / 1048576.0,11:F2} {$"{r.KvPeakBytes / 1048576.0:F2}/{r.KvPoolBytes / 1048576.0:F2}",17}");
        }
        foreach (var g in rows.GroupBy(Model))
        {
            var one = g.FirstOrDefault(r => r.Adapters == 1 && r.Clients > 1);
            var many = g.FirstOrDefault(r => r.Adapters == 64 && !r.Case.EndsWith("own runtimes", StringComparison.Ordinal));
            if (one != null && many != null)
                Console.WriteLine($"{g.Key}: 64 distinct adapters cost {one.TokensPerSecond / many.TokensPerSecond:F2}× the single-adapter time per token (goal ≤ 1.3×)");
        }
    }
}
