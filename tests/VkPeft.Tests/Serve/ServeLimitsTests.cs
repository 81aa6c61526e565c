// `vkpeft serve` on servers of their own: a full queue answers 503 with Retry-After, a client that disconnects frees its
// batch slot at once, the paged KV cache (one pool: a request without pages waits, one that never fits is refused, the
// pages share --memory-budget with the adapters), a base with biases on every linear serves as generate runs it, and
// chat completions (a model whose tokenizer has a chat template) through the official OpenAI .NET client, whole and
// streamed, equal the single-sequence path's greedy reply.
using System.ClientModel;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Chat;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;
using VkPeft.Serve;
using VkPeft.Tests.Models;
using VkPeft.Tests.Support;
using VkPeft.Tests.Training;

namespace VkPeft.Tests.Serve;

public sealed class ServeLimitsTests
{
    [Fact]
    public async Task FullQueueAnswers503AndADisconnectedClientFreesItsSlot()
    {
        var host = ModelLoader.Load(Stories260K.ModelPath);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, BaseQuant.None);
        var options = new ServeOptions { BaseName = "base", Port = 0, MaxBatch = 1, MaxQueue = 1, MaxContext = 512 };
        var server = await ServeHost.StartAsync(model, host.Tokenizer!, BaseQuant.None, [], options);
        await using (server)
        {
            using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
            // A: a long streamed request holds the only slot.
            using var longRequest = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = JsonContent.Create(new { model = "base", prompt = "Once upon a time", max_tokens = 480, temperature = 0, stream = true }),
            };
            var a = await http.SendAsync(longRequest, HttpCompletionOption.ResponseHeadersRead);
            var aReader = new StreamReader(await a.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await aReader.ReadLineAsync(), StringComparison.Ordinal);
            // B waits in the queue (its one place); C finds it full.
            var b = http.PostAsJsonAsync("/v1/completions", new { model = "base", prompt = "The dog", max_tokens = 4, temperature = 0 });
            for (int i = 0; i < 200 && server.Metrics.QueueDepth == 0; i++) await Task.Delay(10);
            Assert.Equal(1, server.Metrics.QueueDepth);
            var c = await http.PostAsJsonAsync("/v1/completions", new { model = "base", prompt = "The cat", max_tokens = 4 });
            Assert.Equal(503, (int)c.StatusCode);
            Assert.Equal("1", c.Headers.RetryAfter?.ToString());
            Assert.Equal("server_busy", JsonDocument.Parse(await c.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("code").GetString());
            // A's client goes away: its sequence leaves the batch and B runs, long before A's 480 tokens would have ended.
            aReader.Dispose();
            a.Dispose();
            var bAnswer = await b;
            Assert.Equal(200, (int)bAnswer.StatusCode);
            for (int i = 0; i < 200 && server.Metrics.ActiveSequences > 0; i++) await Task.Delay(10);
            Assert.Equal(0, server.Metrics.ActiveSequences);
            Assert.True(server.Metrics.GeneratedTokens < 480, $"the disconnected request kept generating ({server.Metrics.GeneratedTokens} tokens)");
        }
    }

    /// <summary>
    /// The KV cache is one pool of pages: a single sequence may hold far more than a per-sequence share of it; two
    /// requests whose pages do not fit together never share a step although batch places are free (the second waits in
    /// the queue and then runs), while two that fit do; one that could never get its pages is a 400 naming them; every
    /// page comes back when the sequences end.
    /// </summary>
    [Fact]
    public async Task KvPagesAreTakenFromOnePoolAndARequestWithoutPagesWaits()
    {
        var host = ModelLoader.Load(Stories260K.ModelPath);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, host.Config, host.Weights, BaseQuant.None);
        // 31 pages of 16 tokens (496) for 4 sequences: 124 tokens each if it were split into slots.
        var options = new ServeOptions { BaseName = "base", Port = 0, MaxBatch = 4, MaxQueue = 4, MaxContext = 512, KvPageSize = 16, KvPages = 31 };
        var server = await ServeHost.StartAsync(model, host.Tokenizer!, BaseQuant.None, [], options);
        await using (server)
        {
            using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
            async Task<string> Metric(string name) =>
                (await http.GetStringAsync("/metrics")).Split('\n').Single(l => l.StartsWith(name + " ", StringComparison.Ordinal))[(name.Length + 1)..];
            Task<HttpResponseMessage> Post(string prompt, int maxTokens) =>
                http.PostAsJsonAsync("/v1/completions", new { model = "base", prompt, max_tokens = maxTokens, temperature = 0 });
            // Two of 5 + 250 tokens (16 pages each) do not fit the 31 pages together: one waits for the other's pages, so no
            // step ever runs both (the largest batch stays 1).
            var apart = await Task.WhenAll(Post("Once upon a time", 250), Post("Once upon a time", 250));
            Assert.All(apart, r => Assert.Equal(200, (int)r.StatusCode));
            Assert.Equal(1, server.Metrics.MaxBatch);
            // Two of 4-5 prompt tokens + 100 (7 pages each) fit together: they share steps.
            var fit = await Task.WhenAll(Post("Once upon a time", 100), Post("The dog", 100));
            Assert.All(fit, r => Assert.Equal(200, (int)r.StatusCode));
            Assert.Equal(2, server.Metrics.MaxBatch);
            Assert.True(server.KvCache.PeakUsed >= 16, $"a 255-token sequence held only {server.KvCache.PeakUsed} pages");
            // 5 + 500 tokens need 32 pages; the pool has 31: refused at once, naming the pages.
            var c = await Post("Once upon a time", 500);
            Assert.Equal(400, (int)c.StatusCode);
            var error = JsonDocument.Parse(await c.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
            Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
            Assert.Contains("32 KV pages", error.GetProperty("message").GetString(), StringComparison.Ordinal);
            for (int i = 0; i < 200 && server.Metrics.ActiveSequences > 0; i++) await Task.Delay(10);
            Assert.Equal("0", await Metric("vkpeft_kv_pages{state=\"used\"}"));
            Assert.Equal("0", await Metric("vkpeft_kv_pages{state=\"reserved\"}"));
            Assert.Equal("31", await Metric("vkpeft_kv_pages{state=\"free\"}"));
        }
    }

    /// <summary>
    /// --memory-budget is shared: KV pages a request reserves push an idle adapter out when both do not fit, and a
    /// request whose pages alone exceed the budget is a 400 saying so.
    /// </summary>
    [Fact]
    public async Task KvPagesAndAdaptersShareTheMemoryBudget()
    {
        var host = ModelLoader.Load(Stories260K.ModelPath);
        var c = host.Config;
        using var dir = new TempDir();
        var lora = VkPeft.Tests.Export.ExportTestSupport.RandomLora(c, seed: 21, baseQuant: BaseQuant.None);
        string loraDir = dir.File("lora");
        VkPeft.Peft.Export.AdapterIO.SaveVkPeft(loraDir, lora, c);
        long adapterBytes = lora.Tensors.Values.Sum(t => t.Count) * sizeof(float);
        long pageBytes = 16L * c.KvDim * sizeof(float) * 2 * c.NLayers;
        Assert.True(adapterBytes >= pageBytes, $"the adapter ({adapterBytes} bytes) should outweigh a page ({pageBytes})");
        long budget = adapterBytes + 10 * pageBytes;
        int pagesInBudget = (int)(budget / pageBytes);
        Assert.True(pagesInBudget < 31, $"the budget holds {pagesInBudget} pages; the test needs fewer than the pool's 31");
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, c, host.Weights, BaseQuant.None);
        var options = new ServeOptions
        {
            BaseName = "base", Port = 0, MaxBatch = 2, MaxQueue = 4, MaxContext = 512, KvPageSize = 16, KvPages = 31, MemoryBudgetBytes = budget,
        };
        var server = await ServeHost.StartAsync(model, host.Tokenizer!, BaseQuant.None, [("lora", loraDir)], options);
        await using (server)
        {
            Assert.Equal(pageBytes, server.KvCache.PageBytes);
            using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
            // "Once upon a time" is 5 tokens: max_tokens 16·n − 5 reserves exactly n pages.
            Task<HttpResponseMessage> Post(string model, int pages) =>
                http.PostAsJsonAsync("/v1/completions", new { model, prompt = "Once upon a time", max_tokens = 16 * pages - 5, temperature = 0 });
            Assert.Equal(200, (int)(await Post("lora", 1)).StatusCode);
            Assert.Equal(1, server.Adapters.ResidentCount);
            // 11 pages and the adapter exceed the budget: the idle adapter is evicted for the pages.
            Assert.Equal(200, (int)(await Post("base", 11)).StatusCode);
            Assert.Equal(0, server.Adapters.ResidentCount);
            Assert.Equal(1, server.Adapters.Evictions);
            // More pages than the whole budget holds: refused, naming the budget.
            var refused = await Post("base", pagesInBudget + 1);
            Assert.Equal(400, (int)refused.StatusCode);
            var error = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
            Assert.Equal("context_length_exceeded", error.GetProperty("code").GetString());
            Assert.Contains($"{budget}-byte memory budget", error.GetProperty("message").GetString(), StringComparison.Ordinal);
            // The adapter loads again within the budget once the pages are back.
            Assert.Equal(200, (int)(await Post("lora", 1)).StatusCode);
        }
    }

    [Fact]
    public async Task ABaseWithBiasesOnEveryLinearServesAsGenerate()
    {
        // stories260K with random q/k/v, o and MLP biases: two requests batched together each continue as generate does,
        // and differently from the bias-free model (else the biases would go untested).
        var host = ModelLoader.Load(Stories260K.ModelPath);
        var config = host.Config with { AttentionBias = true, OutputBias = true, MlpBias = true };
        int seed = 200;
        float[] B(int n) => TestData.Normal(n, seed++, 0.3f);
        var w = host.Weights;
        var weights = new LlamaWeights
        {
            TokenEmbedding = w.TokenEmbedding, FinalNorm = w.FinalNorm, Classifier = w.Classifier, RopeFreqFactors = w.RopeFreqFactors,
            Layers = [.. w.Layers.Select(lw => new LlamaLayerWeights
            {
                AttnNorm = lw.AttnNorm, Wq = lw.Wq, Wk = lw.Wk, Wv = lw.Wv, Wo = lw.Wo, FfnNorm = lw.FfnNorm, WGate = lw.WGate, WUp = lw.WUp, WDown = lw.WDown,
                Bq = B(config.Dim), Bk = B(config.KvDim), Bv = B(config.KvDim), Bo = B(config.Dim),
                BGate = B(config.HiddenDim), BUp = B(config.HiddenDim), BDown = B(config.Dim),
            })],
        };
        string[] prompts = ["Once upon a time", "The little dog"];
        using var ctx = new VulkanContext(GpuFixture.Options());
        string[] plain;
        using (var plainModel = DeviceLlama.Load(ctx, host.Config, host.Weights, BaseQuant.None))
            plain = [.. prompts.Select(p => ServeFixture.Greedy(plainModel, host.Tokenizer!, null, p, 16))];
        using var model = DeviceLlama.Load(ctx, config, weights, BaseQuant.None);
        var expected = prompts.Select(p => ServeFixture.Greedy(model, host.Tokenizer!, null, p, 16)).ToArray();
        Assert.NotEqual(plain, expected);
        var server = await ServeHost.StartAsync(model, host.Tokenizer!, BaseQuant.None, [], new ServeOptions { BaseName = "biased", Port = 0, MaxBatch = 2, MaxContext = 64 });
        await using (server)
        {
            using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
            var answers = await Task.WhenAll(prompts.Select(async p =>
            {
                var r = await http.PostAsJsonAsync("/v1/completions", new { model = "biased", prompt = p, max_tokens = 16, temperature = 0 });
                return JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("text").GetString();
            }));
            Assert.Equal(expected, answers);
        }
    }

    [Fact]
    public async Task ChatThroughTheOfficialClientEqualsTheGreedyReply()
    {
        using var dir = new TempDir();
        var config = Stories260K.Config with { VocabSize = 260 };
        var weights = ModelCatalog.RandomWeights(config, seed: 5, std: 0.5f);
        var tok = (HfTokenizer)TokenizerFiles.Load(ChatDataTests.WriteTokenizer(dir.Path), config.VocabSize);
        using var ctx = new VulkanContext(GpuFixture.Options());
        using var model = DeviceLlama.Load(ctx, config, weights, BaseQuant.None);
        var template = ChatTemplate.Of(tok);
        var ids = tok.Encode(template.Render([new VkPeft.Peft.Tokenizers.ChatMessage("user", "Tell me a story")], addGenerationPrompt: true), addSpecialTokens: false);
        int? eot = template.EndOfTurnToken(tok);
        string expected;
        using (var runner = new LlamaRunner(model, 1, ids.Length + 12, kvCache: true))
        {
            var decoder = new StreamingDecoder(tok, ids[^1]);
            var sb = new StringBuilder();
            new Generator(runner).Generate(ids, 12, new SamplingOptions(0), tok.Eos, id => sb.Append(decoder.Push(id)), eot is { } e ? [e] : null);
            expected = sb.Append(decoder.Flush()).ToString();
        }
        Assert.False(string.IsNullOrEmpty(expected), "the random model should say something");

        var server = await ServeHost.StartAsync(model, tok, BaseQuant.None, [], new ServeOptions { BaseName = "chat-model", Port = 0, MaxBatch = 2, MaxContext = 128 });
        await using (server)
        {
            var client = new ChatClient("chat-model", new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(server.Address, "v1") });
            var chatOptions = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
            var reply = await client.CompleteChatAsync([new UserChatMessage("Tell me a story")], chatOptions);
            Assert.Equal(expected, reply.Value.Content.Count == 0 ? "" : reply.Value.Content[0].Text);
            Assert.Equal(ChatMessageRole.Assistant, reply.Value.Role);
            var streamed = new StringBuilder();
            await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("Tell me a story")], chatOptions))
                foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            Assert.Equal(expected, streamed.ToString());
        }
    }
}
