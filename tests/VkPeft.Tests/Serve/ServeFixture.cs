// A running `vkpeft serve` for the serve tests: stories260K on an NF4+DQ base with two random LoRA adapters and a
// Houlsby bottleneck adapter (block hooks: the rows that take the other residual path), a LLaMA-Adapter
// (gated prompt attention), a soft prompt (virtual tokens) and two attention prefixes, one computed by a projection MLP
// (rows of their own in each sequence's KV cache), a DoRA adapter (row norms of the base) and bias and norm tuning
// (tuned RMSNorm weights), on an ephemeral loopback port,
// and the greedy continuations the single-sequence generation path (what `vkpeft generate --temperature 0` runs)
// gives for every model and prompt, computed before the server takes the device.
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.BiasNorm;
using VkPeft.Peft.Methods.Dora;
using VkPeft.Peft.Methods.LlamaAdapter;
using VkPeft.Peft.Methods.Prefix;
using VkPeft.Peft.Methods.Prompt;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;
using VkPeft.Serve;
using VkPeft.Tests.Export;
using VkPeft.Tests.Models;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Serve;

public sealed class ServeFixture : IAsyncLifetime
{
    public const string BaseName = "stories260K";
    public const int MaxTokens = 16;
    public const int SoftPromptTokens = 5;   // virtual tokens of the "soft-prompt" adapter
    public const int PrefixRows = 7;         // prefix length of the "prefix" adapter
    private const float SoftPromptGain = 8;  // the soft prompt's rows are its text's embeddings × 8, so that they clearly change the continuations
    public static readonly string[] Prompts = ["Once upon a time", "The little dog", "Lily and Tom went to the park"];
    public static readonly BaseQuant Quant = new("nf4-dq", 64);

    private readonly TempDir _dir = new();
    private VulkanContext? _ctx;
    private DeviceLlama? _model;

    public ServeHost Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public ITextTokenizer Tokenizer { get; private set; } = null!;
    /// <summary>Adapter name → folder.</summary>
    public Dictionary<string, string> Adapters { get; } = [];
    /// <summary>(model, prompt) → greedy continuation text of the single-sequence path.</summary>
    public Dictionary<(string Model, string Prompt), string> Expected { get; } = [];

    public async Task InitializeAsync()
    {
        var host = ModelLoader.Load(Stories260K.ModelPath);
        Tokenizer = host.Tokenizer!;
        Adapters["lora-a"] = Save("lora-a", ExportTestSupport.RandomLora(host.Config, seed: 11, baseQuant: Quant));
        Adapters["lora-b"] = Save("lora-b", ExportTestSupport.RandomLora(host.Config, seed: 12, rank: 8, baseQuant: Quant));
        Adapters["houlsby"] = Save("houlsby", ExportTestSupport.RandomBottleneck(host.Config, seed: 13));
        Adapters["prompted"] = Save("prompted", RandomLlamaAdapter(host.Config));
        Adapters["soft-prompt"] = Save("soft-prompt", SoftPrompt(host, "Tom saw a big red ball in the sun"));
        Adapters["prefix"] = Save("prefix", RandomAdapter(host.Config, "prefix", new PrefixSettings(PrefixRows), seed: 80));
        // Trained through the projection MLP: the runtime computes its prefix at each prefill.
        Adapters["prefix-mlp"] = Save("prefix-mlp", RandomAdapter(host.Config, "prefix", new PrefixSettings(4, Projection: true, HiddenSize: 16), seed: 90));
        Adapters["dora"] = Save("dora", RandomDora(host.Config));
        Adapters["bias-norm"] = Save("bias-norm", RandomAdapter(host.Config, "bias", new BiasNormSettings(Norms: true), seed: 100, std: 0.3f,
            targets: Enum.GetValues<TargetModule>()));
        _ctx = new VulkanContext(GpuFixture.Options());
        _model = DeviceLlama.Load(_ctx, host.Config, host.Weights, Quant);
        foreach (var prompt in Prompts)
        {
            Expected[(BaseName, prompt)] = Greedy(_model, Tokenizer, null, prompt, MaxTokens);
            foreach (var (name, dir) in Adapters) Expected[(name, prompt)] = Greedy(_model, Tokenizer, dir, prompt, MaxTokens);
        }
        // 5-token KV pages: prompts, prefixes and completions cross page boundaries in their prefill and while decoding.
        var options = new ServeOptions { BaseName = BaseName, Port = 0, MaxBatch = 8, MaxContext = 96, MaxQueue = 64, KvPageSize = 5 };
        Server = await ServeHost.StartAsync(_model, Tokenizer, Quant, [.. Adapters.Select(kv => (kv.Key, kv.Value))], options);
        Http = new HttpClient { BaseAddress = Server.Address, Timeout = TimeSpan.FromMinutes(3) };
    }

    /// <summary>A LLaMA-Adapter (gated attention over learned prompts in every layer) with random prompts and gates.</summary>
    private static AdapterWeights RandomLlamaAdapter(LlamaConfig c) => RandomAdapter(c, "llama-adapter", new LlamaAdapterSettings(6, null), seed: 40);

    /// <summary>
    /// A prompt-tuning adapter whose virtual tokens are the embeddings of the first tokens of <paramref name="text"/> (text
    /// initialization, done on the host), scaled up: a context that clearly changes the continuations.
    /// </summary>
    private static AdapterWeights SoftPrompt(LoadedModel host, string text)
    {
        var ids = host.Tokenizer!.Encode(text, bos: false);
        Assert.True(ids.Length >= SoftPromptTokens, $"'{text}' has fewer than {SoftPromptTokens} tokens");
        var a = RandomAdapter(host.Config, "prompt", new PromptSettings(SoftPromptTokens), seed: 60);
        var rows = a.Tensors[PromptMethod.TensorName];
        int dim = host.Config.Dim;
        for (int i = 0; i < SoftPromptTokens; i++)
            for (int j = 0; j < dim; j++) rows.Data[i * dim + j] = SoftPromptGain * host.Weights.TokenEmbedding[(long)ids[i] * dim + j];
        return a;
    }

    /// <summary>An adapter (no target modules unless given) whose every tensor is N(0, std²).</summary>
    private static AdapterWeights RandomAdapter(LlamaConfig c, string method, MethodSettings? settings, int seed, float std = 1, TargetModule[]? targets = null)
    {
        var cfg = new AdapterConfig
        {
            Method = PeftMethods.Get(method), Targets = targets ?? [], Settings = settings, BaseQuant = Quant, BaseModel = "stories260K",
        };
        var a = new AdapterWeights(cfg);
        foreach (var spec in cfg.Method.Parameters(c, cfg))
            a.Tensors[spec.Name] = new HostTensor(TestData.Normal((int)spec.Count, seed++, std), spec.Shape);
        return a;
    }

    /// <summary>A DoRA adapter: a random LoRA on every linear with magnitudes |1 + N(0, 0.2²)| per output row.</summary>
    private static AdapterWeights RandomDora(LlamaConfig c)
    {
        var a = ExportTestSupport.RandomLora(c, seed: 14, method: PeftMethods.Get("dora"), baseQuant: Quant);
        int seed = 140;
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in a.Config.Targets)
            {
                var m = TestData.Normal(c.LinearShape(t).Out, seed++, 0.2f).Select(x => Math.Abs(1 + x)).ToArray();
                a.Tensors[DoraMethod.MagnitudeName(l, t)] = new HostTensor(m, [m.Length]);
            }
        return a;
    }

    private string Save(string name, AdapterWeights adapter)
    {
        string dir = _dir.File(name);
        AdapterIO.SaveVkPeft(dir, adapter, Stories260K.Config);
        return dir;
    }

    /// <summary>
    /// The greedy continuation of <paramref name="prompt"/> as `vkpeft generate --temperature 0` produces it: a batch-1
    /// LlamaRunner with a KV cache, the adapter's own runtime (given to its constructor, which sizes the rows for virtual
    /// tokens or a prefix held once in the cache), Generator, and the streaming decoder's text.
    /// </summary>
    public static string Greedy(DeviceLlama model, ITextTokenizer tok, string? adapterDir, string prompt, int maxTokens)
    {
        var ids = tok.Encode(prompt, bos: true);
        using var adapter = adapterDir == null ? null : InferenceAdapter.Create(model.Context, model.Config, AdapterIO.Load(adapterDir, model.Config), ids.Length + maxTokens);
        using var runner = new LlamaRunner(model, 1, ids.Length + maxTokens, kvCache: true, adapter: adapter?.Runtime);
        var decoder = new StreamingDecoder(tok, ids[^1]);
        var text = new StringBuilder();
        new Generator(runner).Generate(ids, maxTokens, new SamplingOptions(0), tok.Eos, id => text.Append(decoder.Push(id)));
        return text.Append(decoder.Flush()).ToString();
    }

    /// <summary>POSTs <paramref name="body"/> and returns the status and the parsed JSON answer.</summary>
    public async Task<(int Status, JsonElement Body, HttpResponseMessage Response)> Post(string path, object body)
    {
        var response = await Http.PostAsync(path, new StringContent(body as string ?? JsonSerializer.Serialize(body), Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, JsonDocument.Parse(text).RootElement.Clone(), response);
    }

    /// <summary>Streams a completion and returns the concatenated text pieces and the finish reason.</summary>
    public async Task<(string Text, string? Finish)> Stream(string path, JsonObject body)
    {
        body["stream"] = true;
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        using var response = await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var text = new StringBuilder();
        string? finish = null;
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line, StringComparison.Ordinal);
            string data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                done = true;
                continue;
            }
            Assert.False(done, "no event may follow [DONE]");
            var choice = JsonDocument.Parse(data).RootElement.GetProperty("choices")[0];
            if (choice.TryGetProperty("text", out var t)) text.Append(t.GetString());
            else if (choice.GetProperty("delta").TryGetProperty("content", out var c)) text.Append(c.GetString());
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
        }
        Assert.True(done, "the stream ends with data: [DONE]");
        return (text.ToString(), finish);
    }

    public async Task DisposeAsync()
    {
        Http?.Dispose();
        if (Server != null) await Server.DisposeAsync();
        _model?.Dispose();
        _ctx?.Dispose();
        _dir.Dispose();
    }
}

[CollectionDefinition("serve")]
public sealed class ServeCollection : ICollectionFixture<ServeFixture>;
