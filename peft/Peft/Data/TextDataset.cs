// Training and evaluation data: .txt (one document per non-empty line), .jsonl with "text", or instruction records
// ("instruction"/"input"/"output" or "prompt"/"completion") whose loss is masked to the response.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Tokenizers;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Data;

/// <summary>One example: a prompt part (not predicted) and a response part (predicted); plain text has no prompt.</summary>
public sealed record DataRecord(string Prompt, string Response);

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
                    if (Str(root, "text") is { } text) records.Add(new DataRecord("", text));
                    else if (Str(root, "output") is { } output)
                    {
                        var instruction = Str(root, "instruction") ?? "";
                        var input = Str(root, "input") ?? "";
                        var prompt = input.Length > 0 ? $"{instruction}\n{input}\n" : $"{instruction}\n";
                        records.Add(new DataRecord(prompt, output));
                    }
                    else if (Str(root, "completion") is { } completion) records.Add(new DataRecord(Str(root, "prompt") ?? "", completion));
                    else throw new ModelFormatException(path, $"line {lineNo}", "no \"text\", \"output\" or \"completion\" field");
                }
            }
            else records.Add(new DataRecord("", line));
        }
        if (records.Count == 0) throw new ModelFormatException(path, "records", "the file holds no non-empty document");
        return records;
    }

    /// <summary>BOS + prompt + response (+ EOS after an instruction response); only response tokens are predicted.</summary>
    public static TokenizedDocument Tokenize(ITextTokenizer tok, DataRecord r)
    {
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
}
