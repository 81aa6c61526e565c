// `vkpeft serve` over real HTTP on loopback: greedy completions of several adapters batched together equal the
// single-sequence generation path token for token, streaming gives the same text, concurrent clients get their own
// adapter's output, adapters load and unload at run time, every bad request is a 4xx with an OpenAI-style error (and the
// server keeps serving), and the official OpenAI .NET client talks to it.
using System.ClientModel;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using OpenAI;
using OpenAI.Models;

namespace VkPeft.Tests.Serve;

[Collection("serve")]
public sealed class ServeTests(ServeFixture f)
{
    private static string Completion(string model, string prompt, int maxTokens = ServeFixture.MaxTokens, object? extra = null)
    {
        var o = new JsonObject { ["model"] = model, ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = 0 };
        if (extra != null)
            foreach (var (k, v) in JsonSerializer.SerializeToNode(extra)!.AsObject()) o[k] = v?.DeepClone();
        return o.ToJsonString();
    }

    private async Task<string> CompletionText(string model, string prompt)
    {
        var (status, body, _) = await f.Post("/v1/completions", Completion(model, prompt));
        Assert.True(status == 200, $"{model}: {body}");
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.Equal(model, body.GetProperty("model").GetString());
        return body.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    [Fact]
    public async Task GreedyCompletionsOfEveryAdapterInOneBatchEqualGenerate()
    {
        // Every model × prompt at once: 27 requests, 8 slots, so steps run rows of several adapters (and the base) together,
        // a soft prompt's and a prefix's prefill rows among them.
        var cases = ServeFixture.Prompts.SelectMany(p => f.Expected.Keys.Where(k => k.Prompt == p)).ToList();
        var texts = await Task.WhenAll(cases.Select(c => CompletionText(c.Model, c.Prompt)));
        for (int i = 0; i < cases.Count; i++)
            Assert.True(f.Expected[cases[i]] == texts[i], $"{cases[i]}: served '{texts[i]}', generate gives '{f.Expected[cases[i]]}'");
        Assert.True(f.Server.Metrics.MaxBatch >= 4, $"the requests should have shared steps (largest batch {f.Server.Metrics.MaxBatch})");
        // The LoRA adapters ran through the gathered kernels, the bottleneck adapter through its own runtime.
        var info = f.Server.Adapters.List().ToDictionary(a => a.Name);
        Assert.True(info["lora-a"].Gathered && info["lora-b"].Gathered, "plain LoRA adapters sit in the gathered pools");
        Assert.False(info["houlsby"].Gathered);
        // The adapters really differ from each other and from the base on these prompts (else the test proves little).
        // Each model's continuations of the three prompts differ from every other model's (the soft prompt leaves "Once upon
        // a time" as the base continues it, and changes the other two).
        var byModel = f.Expected.GroupBy(kv => kv.Key.Model, kv => $"{kv.Key.Prompt}: {kv.Value}").Select(g => string.Join('\n', g.Order(StringComparer.Ordinal))).ToList();
        Assert.True(byModel.Distinct().Count() == 10, string.Join("\n", f.Expected.Select(kv => $"{kv.Key} '{kv.Value}'")));
    }

    /// <summary>
    /// A request's adapter_scale multiplies its LoRA delta in the gathered kernel, row by row: at 0 a LoRA adapter's
    /// greedy text is the base's, at 1 the adapter's own, and a middle scale differs from both — all in one batch.
    /// </summary>
    [Fact]
    public async Task AdapterScaleZeroGivesTheBaseAndOneTheAdapter()
    {
        string prompt = ServeFixture.Prompts[1];
        async Task<string> Scaled(string model, double scale)
        {
            var (status, body, _) = await f.Post("/v1/completions", Completion(model, prompt, extra: new { adapter_scale = scale }));
            Assert.True(status == 200, $"{model} × {scale}: {body}");
            return body.GetProperty("choices")[0].GetProperty("text").GetString()!;
        }
        var texts = await Task.WhenAll(Scaled("lora-a", 0), Scaled("lora-a", 1), Scaled("lora-b", 0), Scaled("lora-a", 0.5), CompletionText("lora-a", prompt));
        Assert.Equal(f.Expected[(ServeFixture.BaseName, prompt)], texts[0]);
        Assert.Equal(f.Expected[("lora-a", prompt)], texts[1]);
        Assert.Equal(f.Expected[(ServeFixture.BaseName, prompt)], texts[2]);
        Assert.Equal(f.Expected[("lora-a", prompt)], texts[4]);
        Assert.NotEqual(f.Expected[(ServeFixture.BaseName, prompt)], f.Expected[("lora-a", prompt)]);   // else the test proves little
    }

    [Fact]
    public async Task StreamingYieldsTheSameText()
    {
        foreach (var model in new[] { "lora-a", "houlsby", "prompted" })
        {
            var body = JsonNode.Parse(Completion(model, ServeFixture.Prompts[0]))!.AsObject();
            var (text, finish) = await f.Stream("/v1/completions", body);
            Assert.Equal(f.Expected[(model, ServeFixture.Prompts[0])], text);
            Assert.Equal("length", finish);
        }
    }

    [Fact]
    public async Task StopSequenceCutsTheTextAndEndsWithStop()
    {
        string full = f.Expected[("lora-b", ServeFixture.Prompts[1])];
        Assert.True(full.Length > 12, "the reference continuation is long enough to cut");
        string stop = full.Substring(full.Length / 2, 3);
        string expected = full[..full.IndexOf(stop, StringComparison.Ordinal)];
        var (status, body, _) = await f.Post("/v1/completions", Completion("lora-b", ServeFixture.Prompts[1], extra: new { stop = new[] { stop } }));
        Assert.Equal(200, status);
        Assert.Equal(expected, body.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal("stop", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        var (streamed, finish) = await f.Stream("/v1/completions", JsonNode.Parse(Completion("lora-b", ServeFixture.Prompts[1], extra: new { stop }))!.AsObject());
        Assert.Equal(expected, streamed);
        Assert.Equal("stop", finish);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public async Task BoundedLoadLosesAndMixesNothing()
    {
        // 24 requests from 16 concurrent clients (three times the 8 slots), with streaming and whole responses interleaved:
        // each answer is its own.
        var cases = Enumerable.Range(0, 24).Select(i => f.Expected.Keys.ElementAt(i * 7 % f.Expected.Count)).ToList();
        using var gate = new SemaphoreSlim(16);
        var results = await Task.WhenAll(cases.Select(async (c, i) =>
        {
            await gate.WaitAsync();
            try
            {
                if (i % 3 == 0) return (await f.Stream("/v1/completions", JsonNode.Parse(Completion(c.Model, c.Prompt))!.AsObject())).Text;
                return await CompletionText(c.Model, c.Prompt);
            }
            finally { gate.Release(); }
        }));
        for (int i = 0; i < cases.Count; i++) Assert.True(f.Expected[cases[i]] == results[i], $"request {i} {cases[i]} got '{results[i]}'");
    }

    [Fact]
    public async Task AdaptersLoadAndUnloadAtRunTime()
    {
        var (status, body, _) = await f.Post("/v1/adapters", new { name = "late", path = f.Adapters["lora-b"] });
        Assert.True(status == 201, body.ToString());
        var models = JsonDocument.Parse(await f.Http.GetStringAsync("/v1/models")).RootElement.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        Assert.Contains("late", models);
        Assert.Equal(f.Expected[("lora-b", ServeFixture.Prompts[2])], await CompletionText("late", ServeFixture.Prompts[2]));
        (status, _, _) = await f.Post("/v1/adapters", new { name = "late", path = f.Adapters["lora-a"] });
        Assert.Equal(409, status);

        var deleted = await f.Http.DeleteAsync("/v1/adapters/late");
        Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        (status, body, _) = await f.Post("/v1/completions", Completion("late", "Once"));
        Assert.Equal(404, status);
        Assert.Equal("model_not_found", body.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await f.Http.DeleteAsync("/v1/adapters/late")).StatusCode);

        // The name is free again, now for another adapter: the old resident copy must not answer for it.
        (status, body, _) = await f.Post("/v1/adapters", new { name = "late", path = f.Adapters["houlsby"] });
        Assert.True(status == 201, body.ToString());
        Assert.Equal(f.Expected[("houlsby", ServeFixture.Prompts[2])], await CompletionText("late", ServeFixture.Prompts[2]));
        Assert.Equal(HttpStatusCode.OK, (await f.Http.DeleteAsync("/v1/adapters/late")).StatusCode);
    }

    public static TheoryData<string, string, int, string?> BadRequests => new()
    {
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": ", 400, "invalid_json" },
        { "/v1/completions", "[1, 2]", 400, "invalid_json" },
        { "/v1/completions", "{\"model\": \"nope\", \"prompt\": \"Once\"}", 404, "model_not_found" },
        { "/v1/completions", "{\"prompt\": \"Once\"}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\"}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": 5}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"temperature\": -1}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"temperature\": \"hot\"}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"top_p\": 0}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"max_tokens\": 0}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"max_tokens\": 2.5}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"stop\": [1]}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"stream\": \"yes\"}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"n\": 2}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"adapter_scale\": 9}", 400, null },
        { "/v1/completions", "{\"model\": \"lora-a\", \"prompt\": \"Once\", \"adapter_scale\": \"half\"}", 400, null },
        { "/v1/completions", "{\"model\": \"stories260K\", \"prompt\": \"Once\", \"adapter_scale\": 0.5}", 400, null },
        { "/v1/completions", "{\"model\": \"houlsby\", \"prompt\": \"Once\", \"adapter_scale\": 0.5}", 400, null },
        { "/v1/chat/completions", "{\"model\": \"lora-a\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", 400, "no_chat_template" },
        { "/v1/adapters", "{\"name\": \"x\", \"path\": \"/nonexistent/adapter\"}", 400, "invalid_adapter" },
        { "/v1/adapters", "{\"name\": \"stories260K\", \"path\": \"/tmp\"}", 400, null },
        { "/v1/nothing", "{}", 404, "not_found" },
    };

    [Fact]
    public async Task BadRequestsGetOpenAiStyleErrorsAndTheServerKeepsServing()
    {
        foreach (var row in BadRequests)
        {
            var (path, body, status, code) = ((string)row[0], (string)row[1], (int)row[2], (string?)row[3]);
            var (got, answer, _) = await f.Post(path, body);
            Assert.True(got == status, $"{body}: {got} {answer}");
            var error = answer.GetProperty("error");
            Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()), body);
            Assert.Equal(JsonValueKind.String, error.GetProperty("type").ValueKind);
            if (code != null) Assert.True(code == error.GetProperty("code").GetString(), $"{body}: {answer}");
        }
        Assert.Equal(f.Expected[("lora-a", ServeFixture.Prompts[0])], await CompletionText("lora-a", ServeFixture.Prompts[0]));
    }

    [Fact]
    public async Task OverLongPromptIsRefusedWithTheContextSize()
    {
        string prompt = string.Join(' ', Enumerable.Repeat("Once upon a time", 40));
        var (status, body, _) = await f.Post("/v1/completions", Completion("lora-a", prompt));
        Assert.Equal(400, status);
        Assert.Equal("context_length_exceeded", body.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("96", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task PromptThatLeavesNoRoomForThePrefixIsRefused()
    {
        // A prompt the base takes (under 96 tokens) but not with the prefix's rows before it.
        string prompt = "Once";
        while (f.Tokenizer.Encode(prompt, bos: true).Length < 96 - ServeFixture.PrefixRows) prompt += " upon";
        Assert.InRange(f.Tokenizer.Encode(prompt, bos: true).Length, 96 - ServeFixture.PrefixRows, 95);
        var (status, body, _) = await f.Post("/v1/completions", Completion("prefix", prompt, maxTokens: 1));
        Assert.Equal(400, status);
        Assert.Equal("context_length_exceeded", body.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains($"{ServeFixture.PrefixRows} rows", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        // The base takes the same prompt, and the prefix adapter the next request.
        (status, body, _) = await f.Post("/v1/completions", Completion(ServeFixture.BaseName, prompt, maxTokens: 1));
        Assert.True(status == 200, body.ToString());
        Assert.Equal(f.Expected[("prefix", ServeFixture.Prompts[0])], await CompletionText("prefix", ServeFixture.Prompts[0]));
    }

    [Fact]
    public async Task HealthModelsAndMetricsAnswer()
    {
        Assert.Contains("ok", await f.Http.GetStringAsync("/health"), StringComparison.Ordinal);
        await CompletionText("lora-a", ServeFixture.Prompts[0]);
        string metrics = await f.Http.GetStringAsync("/metrics");
        foreach (var name in new[] { "vkpeft_requests_total{status=\"200\"}", "vkpeft_generated_tokens_total", "vkpeft_queue_depth", "vkpeft_batch_size",
                     "vkpeft_adapters_resident", "vkpeft_device_memory_bytes{category=\"weights\"}", "vkpeft_tokens_per_second",
                     "vkpeft_kv_pages{state=\"used\"}", "vkpeft_kv_pages{state=\"free\"}", "vkpeft_kv_pages{state=\"reserved\"}", "vkpeft_memory_budget_bytes" })
            Assert.Contains(name, metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheOfficialOpenAiClientListsTheModelsAndReadsErrors()
    {
        var options = new OpenAIClientOptions { Endpoint = new Uri(f.Server.Address, "v1") };
        var models = await new OpenAIModelClient(new ApiKeyCredential("unused"), options).GetModelsAsync();
        Assert.Equal(["bias-norm", "dora", "houlsby", "lora-a", "lora-b", "prefix", "prefix-mlp", "prompted", "soft-prompt", "stories260K"], models.Value.Select(m => m.Id).Order(StringComparer.Ordinal));
        var chat = new OpenAI.Chat.ChatClient("lora-a", new ApiKeyCredential("unused"), options);
        var e = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new OpenAI.Chat.UserChatMessage("hi")]));
        Assert.Equal(400, e.Status);
        Assert.Contains("chat template", e.Message, StringComparison.Ordinal);
    }
}
