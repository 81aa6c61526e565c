// Training and evaluation data: .txt (one document per non-empty line), .jsonl with "text", instruction records
// ("instruction"/"input"/"output" or "prompt"/"completion") whose loss is masked to the response, or chat records
// ("messages": [{"role", "content"}]) rendered with the tokenizer's chat template, the loss on assistant turns only.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Tokenizers;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Data;

/// <summary>One example: a prompt part (not predicted) and a response part (predicted); plain text has no prompt; a chat
/// record has <paramref name="Messages"/> instead (its assistant turns are predicted).</summary>
public sealed record DataRecord(string Prompt, string Response, IReadOnlyList<ChatMessage>? Messages = null);

/// <summary>A tokenized example: BOS + prompt + response (+ EOS for instruction data), and which positions are predicted.</summary>
public sealed record TokenizedDocument(int[] Tokens, bool[] Predict);

public static class TextDataset
{
    /// <summary>Reads a data file; errors name the file and line.</summary>
    public static List<DataRecord> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}");
        var ext = Path.GetExtension(path).ToLowerInvariant();
        var records = new List<DataRecord>();
        int lineNo = 0;
        // Strict UTF-8: a byte sequence that is not text is an error naming the line, not a silent U+FFFD.
        using var lines = File.ReadLines(path, new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true)).GetEnumerator();
        while (true)
        {
            try
            {
                if (!lines.MoveNext()) break;
            }
            catch (System.Text.DecoderFallbackException)
            {
                throw new ModelFormatException(path, $"line {lineNo + 1}", "invalid UTF-8 at or after this line (the data must be UTF-8 text)");
            }
            string raw = lines.Current;
            lineNo++;
            var line = raw.Trim();
            if (line.Length == 0) continue;
            if (ext is ".jsonl" or ".json")
            {
                JsonDocument doc;
                try { doc = JsonDocument.Parse(line); }
                catch (JsonException e) { throw new ModelFormatException(path, $"line {lineNo}", $"not valid JSON ({e.Message})"); }
                using (doc)
                {
                    var root = doc.RootElement;
                    if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, $"line {lineNo}", "expected a JSON object");
                    if (root.TryGetProperty("messages", out var messages)) records.Add(new DataRecord("", "", ReadMessages(path, lineNo, messages)));
                    else if (Str(root, "text") is { } text) records.Add(new DataRecord("", text));
                    else if (Str(root, "output") is { } output)
                    {
                        var instruction = Str(root, "instruction") ?? "";
                        var input = Str(root, "input") ?? "";
                        var prompt = input.Length > 0 ? $"{instruction}\n{input}\n" : $"{instruction}\n";
                        records.Add(new DataRecord(prompt, output));
                    }
                    else if (Str(root, "completion") is { } completion) records.Add(new DataRecord(Str(root, "prompt") ?? "", completion));
                    else throw new ModelFormatException(path, $"line {lineNo}", "no \"messages\", \"text\", \"output\" or \"completion\" field");
                }
            }
            else records.Add(new DataRecord("", line));
        }
        if (records.Count == 0) throw new ModelFormatException(path, "records", "the file holds no non-empty document");
        return records;
    }

    private static List<ChatMessage> ReadMessages(string path, int lineNo, JsonElement messages)
    {
        if (messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw new ModelFormatException(path, $"line {lineNo}: messages", "expected a non-empty array of {\"role\", \"content\"}");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || Str(m, "role") is not { } role)
                throw new ModelFormatException(path, $"line {lineNo}: messages[{i}].role", "expected an object with a string \"role\"");
            if (Str(m, "content") is not { } content)
                throw new ModelFormatException(path, $"line {lineNo}: messages[{i}].content", "expected a string (structured content is not supported)");
            list.Add(new ChatMessage(role, content));
            i++;
        }
        if (list.All(m => m.Role != "assistant"))
            throw new ModelFormatException(path, $"line {lineNo}: messages", "no \"assistant\" turn: nothing to train on");
        return list;
    }

    /// <summary>BOS + prompt + response (+ EOS after an instruction response); only response tokens are predicted.
    /// Chat records: the template's rendering, tokenized as Hugging Face does (no extra special tokens), with the
    /// assistant turns — their content and the end-of-turn token right after it — predicted.</summary>
    public static TokenizedDocument Tokenize(ITextTokenizer tok, DataRecord r)
    {
        ArgumentNullException.ThrowIfNull(r);
        if (r.Messages is { } messages) return TokenizeChat(tok, ChatTemplate.Of(tok), messages);
        if (r.Prompt.Length == 0)
        {
            var ids = tok.Encode(r.Response, bos: true);
            return new TokenizedDocument(ids, ids.Select((_, i) => i > 0).ToArray());
        }
        var prompt = tok.Encode(r.Prompt, bos: true);
        var full = tok.Encode(r.Prompt + r.Response, bos: true, eos: true);
        // Positions past the prompt's tokens are the response (BPE may merge across the seam; the prompt prefix rule holds
        // for the llama2.c and SentencePiece encoders when the prompt ends in whitespace or newline).
        int p = 0;
        while (p < prompt.Length && p < full.Length && prompt[p] == full[p]) p++;
        return new TokenizedDocument(full, full.Select((_, i) => i >= p).ToArray());
    }

    /// <summary>A chat rendered by <paramref name="template"/>; positions of assistant turns are predicted.</summary>
    public static TokenizedDocument TokenizeChat(ITextTokenizer tok, ChatTemplate template, IReadOnlyList<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(tok);
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(messages);
        var hf = tok as HfTokenizer ?? throw new FormatException("chat data needs a Hugging Face tokenizer.json with a chat template");
        string full = template.Render(messages, addGenerationPrompt: false);
        int[] ids = hf.Encode(full, addSpecialTokens: false);
        var predict = new bool[ids.Length];
        for (int i = 0; i < messages.Count; i++)
        {
            if (messages[i].Role != "assistant") continue;
            string before = template.Render(messages.Take(i).ToList(), addGenerationPrompt: true);
            if (!full.StartsWith(before, StringComparison.Ordinal))
                throw new FormatException($"the chat template renders the turns before assistant message {i} differently on their own; cannot find that turn");
            int start = before.Length;
            string content = messages[i].Content.Trim();
            int at = content.Length == 0 ? start : full.IndexOf(content, start, StringComparison.Ordinal);
            if (at < 0) throw new FormatException($"assistant message {i} does not appear in the chat template's rendering");
            int end = at + content.Length;
            end += hf.SpecialTokenLengthAt(full, end);         // the end-of-turn token (<|eot_id|>, </s>, <|im_end|> …)
            int a = TokenBoundary(hf, full, ids, start), b = TokenBoundary(hf, full, ids, end);
            for (int t = a; t < b; t++) predict[t] = true;
        }
        return new TokenizedDocument(ids, predict);
    }

    /// <summary>How many tokens of <paramref name="ids"/> the text before <paramref name="pos"/> covers (the common prefix).</summary>
    private static int TokenBoundary(HfTokenizer tok, string text, int[] ids, int pos)
    {
        if (pos >= text.Length) return ids.Length;
        int[] prefix = tok.Encode(text[..pos], addSpecialTokens: false);
        int k = 0;
        while (k < prefix.Length && k < ids.Length && prefix[k] == ids[k]) k++;
        return k;
    }
}
