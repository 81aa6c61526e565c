// Chat-format data ({"messages": [...]}) on a tiny byte-level tokenizer with a chat template, written here: only the
// assistant turns (their text and the end-of-turn token) are predicted, bad records are clear errors, and LoRA on
// stories260K learns the assistant replies (held-out loss over assistant tokens falls).
using System.Text;
using System.Text.Json.Nodes;
using VkPeft.Peft.Data;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Peft.Training;
using VkPeft.Tests.Engine;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
public sealed class ChatDataTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-chat-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Template =
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

    /// <summary>GPT-2 byte-level vocabulary (one token per byte, no merges) plus four special tokens: 260 ids.</summary>
    internal static string WriteTokenizer(string dir, string? template = Template)
    {
        var vocab = new JsonObject();
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            char c = printable ? (char)b : (char)(256 + n++);
            vocab[c.ToString()] = b;
        }
        string[] specials = ["<|user|>", "<|assistant|>", "<|end|>", "<s>"];
        var added = new JsonArray(specials.Select((s, i) => (JsonNode)new JsonObject
        {
            ["id"] = 256 + i, ["content"] = s, ["special"] = true, ["normalized"] = false,
            ["lstrip"] = false, ["rstrip"] = false, ["single_word"] = false,
        }).ToArray());
        var tok = new JsonObject
        {
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["post_processor"] = new JsonObject { ["type"] = "ByteLevel" },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = new JsonArray() },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        var cfg = new JsonObject { ["bos_token"] = "<s>", ["eos_token"] = "<|end|>" };
        if (template != null) cfg["chat_template"] = template;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), cfg.ToJsonString());
        return Path.Combine(dir, "tokenizer.json");
    }

    private static string Conversation(string question, string answer, string? system = null)
    {
        var messages = new JsonArray();
        if (system != null) messages.Add(new JsonObject { ["role"] = "system", ["content"] = system });
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = question });
        messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = answer });
        return new JsonObject { ["messages"] = messages }.ToJsonString();
    }

    [Fact]
    public void OnlyAssistantTurnsArePredicted()
    {
        var tok = (HfTokenizer)TokenizerFiles.Load(WriteTokenizer(_dir));
        string data = Path.Combine(_dir, "chat.jsonl");
        var two = new JsonObject
        {
            ["messages"] = new JsonArray(
                new JsonObject { ["role"] = "user", ["content"] = "Sky?" },
                new JsonObject { ["role"] = "assistant", ["content"] = " Blue. " },
                new JsonObject { ["role"] = "user", ["content"] = "Grass?" },
                new JsonObject { ["role"] = "assistant", ["content"] = "Green! 🌿" }),
        };
        File.WriteAllText(data, two.ToJsonString() + "\n");
        var d = TextDataset.Tokenize(tok, TextDataset.Read(data).Single());
        Assert.Equal(tok.Bos, d.Tokens[0]);
        // The predicted runs, decoded, are exactly the replies (as the template writes them) with their end token.
        var runs = new List<string>();
        for (int i = 0; i < d.Tokens.Length; i++)
        {
            if (!d.Predict[i]) continue;
            int j = i;
            while (j < d.Tokens.Length && d.Predict[j]) j++;
            runs.Add(tok.Decode(d.Tokens.AsSpan(i, j - i), skipSpecialTokens: false, cleanUp: false));
            i = j;
        }
        Assert.Equal(["Blue.<|end|>", "Green! 🌿<|end|>"], runs);
        Assert.Equal(Encoding.UTF8.GetByteCount("Blue.Green! 🌿") + 2, d.Predict.Count(p => p));
        Assert.Equal(tok.Encode(ChatTemplate.Of(tok).Render(
            [new("user", "Sky?"), new("assistant", " Blue. "), new("user", "Grass?"), new("assistant", "Green! 🌿")], false), addSpecialTokens: false), d.Tokens);
    }

    [Fact]
    public void BadChatRecordsAreClearErrors()
    {
        string data = Path.Combine(_dir, "bad.jsonl");
        File.WriteAllText(data, Conversation("a", "b") + "\n{\"messages\": [{\"role\": \"user\", \"content\": [1]}]}\n");
        var e = Assert.Throws<ModelFormatException>(() => TextDataset.Read(data));
        Assert.Equal("line 2: messages[0].content", e.Field);
        File.WriteAllText(data, "{\"messages\": [{\"role\": \"user\", \"content\": \"only a question\"}]}\n");
        Assert.Contains("no \"assistant\" turn", Assert.Throws<ModelFormatException>(() => TextDataset.Read(data)).Message);

        string noTemplate = Directory.CreateDirectory(Path.Combine(_dir, "plain")).FullName;
        var tok = TokenizerFiles.Load(WriteTokenizer(noTemplate, template: null));
        File.WriteAllText(data, Conversation("a", "b") + "\n");
        var err = Assert.Throws<ModelFormatException>(() => TextDataset.Tokenize(tok, TextDataset.Read(data)[0]));
        Assert.Equal("chat_template", err.Field);
        Assert.EndsWith("tokenizer_config.json", err.File, StringComparison.Ordinal);
    }

    [Fact]
    public void LoraLearnsTheAssistantReplies()
    {
        var tok = TokenizerFiles.Load(WriteTokenizer(_dir));
        string[] colors = ["red", "blue", "green", "gold"];
        string Write(string name, int count, int seed)
        {
            var rng = new Random(seed);
            string path = Path.Combine(_dir, name);
            File.WriteAllLines(path, Enumerable.Range(0, count).Select(_ =>
            {
                string c = colors[rng.Next(colors.Length)];
                return Conversation($"Pick {c}.", $"Pip pip! I pick {c}, hooray!", system: "Be cheerful.");
            }));
            return path;
        }
        var o = new TrainOptions
        {
            Data = Write("train.jsonl", 32, 1),
            EvalData = Write("eval.jsonl", 6, 2),
            Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = 16 }, BaseQuant = BaseQuant.Parse("nf4-dq") },
            Quant = BaseQuant.Parse("nf4-dq"),
            Steps = 5, Batch = 4, SeqLen = 64, Lr = 5e-3f, Warmup = 1, Seed = 3,
            Out = Path.Combine(_dir, "run"),
        };
        var data = TrainingData.Load(tok, o.Data, o.EvalData, o.EvalFraction, o.SeqLen, o.Seed);
        // Targets are the assistant tokens only: each conversation predicts its reply and <|end|>.
        long perConversation = Encoding.UTF8.GetByteCount("Pip pip! I pick red, hooray!") + 1;
        Assert.InRange(data.Eval.Sum(w => w.Targets.Count(t => t >= 0)), 6 * (perConversation - 2), 6 * (perConversation + 2));
        var stories = DeviceModelTests.Stories.Value;
        using var model = DeviceLlama.Load(gpu.Context, stories.Config, stories.Weights, o.Quant);
        using var trainer = new Trainer(gpu.Context, model, o, data);
        var s = trainer.Run();
        Assert.True(s.EvalLoss < 0.8 * s.InitialEvalLoss, $"held-out assistant loss {s.InitialEvalLoss} → {s.EvalLoss}");
    }
}
