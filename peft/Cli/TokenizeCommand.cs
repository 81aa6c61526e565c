// `vkpeft tokenize`: shows how a model's tokenizer cuts text: each id with its token string and text, then the
// decoded text (like llama.cpp's llama-tokenize). Reads only the tokenizer, never the weights of HF/GGUF models.
using System.CommandLine;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;

namespace VkPeft.Cli;

public static class TokenizeCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model whose tokenizer to use (HF folder, .gguf, llama2.c .bin)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder (tokenizer.json, tokenizer.model; tokenizer.bin needs --model)" };
        var text = new Option<string?>("--text") { Description = "Text to tokenize" };
        var file = new Option<string?>("--file") { Description = "File whose text (UTF-8) to tokenize" };
        var special = new Option<bool>("--special") { Description = "Add the special tokens the tokenizer puts around a sequence (BOS …), as training does" };
        var split = new Option<bool>("--split-special-tokens") { Description = "Tokenize special-token text (e.g. <|eot_id|>) as plain text" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: ids, tokens, pieces, decoded" };
        var cmd = new Command("tokenize", "Show the token ids, token strings and decoded text of a text") { model, tokenizer, text, file, special, split, json };
        cmd.SetAction(parse =>
        {
            string? modelPath = parse.GetValue(model), tokPath = parse.GetValue(tokenizer);
            if (modelPath is null && tokPath is null) throw new CliUsageException("give --model or --tokenizer");
            string? t = parse.GetValue(text), f = parse.GetValue(file);
            if ((t is null) == (f is null)) throw new CliUsageException("give exactly one of --text and --file");
            if (f is not null && !File.Exists(f)) throw new FileNotFoundException($"--file: '{f}' does not exist");
            string input = t ?? File.ReadAllText(f!, Encoding.UTF8);

            ITextTokenizer tok;
            if (tokPath is not null)
            {
                if (!File.Exists(tokPath) && !Directory.Exists(tokPath)) throw new FileNotFoundException($"--tokenizer: '{tokPath}' does not exist");
                // Only a llama2.c tokenizer.bin needs the model (for its vocabulary size); the others name their own BOS/EOS.
                bool needsModel = Directory.Exists(tokPath)
                    ? !File.Exists(Path.Combine(tokPath, "tokenizer.json")) && !File.Exists(Path.Combine(tokPath, "tokenizer.model"))
                    : !tokPath.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && !tokPath.EndsWith(".model", StringComparison.OrdinalIgnoreCase);
                var cfg = modelPath is not null && needsModel ? ModelLoader.Load(modelPath).Config : null;
                tok = TokenizerFiles.Load(tokPath, cfg?.VocabSize, cfg?.BosId ?? -1, cfg?.EosId ?? -1);
            }
            else
            {
                if (!File.Exists(modelPath) && !Directory.Exists(modelPath)) throw new FileNotFoundException($"--model: '{modelPath}' does not exist");
                tok = ModelLoader.LoadTokenizer(modelPath!);
            }
            if (parse.GetValue(split) && tok is HfTokenizer hf) tok = hf.WithSplitSpecialTokens(true);

            int[] ids = tok.Encode(input, bos: parse.GetValue(special));
            var tokens = ids.Select(id => TokenString(tok, id)).ToArray();
            var pieces = ids.Select((id, i) => Piece(tok, i > 0 ? ids[i - 1] : -1, id)).ToArray();
            string decoded = tok is HfTokenizer h ? h.Decode(ids, skipSpecialTokens: false, cleanUp: h.CleanUpTokenizationSpaces) : tok.Decode(ids);
            if (parse.GetValue(json))
            {
                var node = new JsonObject
                {
                    ["count"] = ids.Length,
                    ["ids"] = new JsonArray(ids.Select(i => (JsonNode)i).ToArray()),
                    ["tokens"] = new JsonArray(tokens.Select(s => (JsonNode)s).ToArray()),
                    ["pieces"] = new JsonArray(pieces.Select(s => (JsonNode)s).ToArray()),
                    ["decoded"] = decoded,
                };
                Console.WriteLine(node.ToJsonString(new JsonSerializerOptions { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
                return 0;
            }
            for (int i = 0; i < ids.Length; i++)
                Console.WriteLine($"{ids[i],8} {Quote(tokens[i]),-24} {Quote(pieces[i])}");
            Console.WriteLine($"{ids.Length} tokens; decoded: {Quote(decoded)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>The token as the tokenizer file spells it (Ġ, ▁, &lt;0x0A&gt; …).</summary>
    private static string TokenString(ITextTokenizer tok, int id) => tok switch
    {
        HfTokenizer h => h.TokenString(id) ?? "",
        ScoreMergeTokenizer s => Encoding.UTF8.GetString(s.PieceBytes(id)).Replace(' ', '\u2581'),
        _ => tok.DecodeToken(-1, id),
    };

    /// <summary>The text this token adds after <paramref name="prev"/> (special tokens shown as written; a character whose
    /// bytes span tokens shows as U+FFFD in each).</summary>
    private static string Piece(ITextTokenizer tok, int prev, int id) =>
        tok is HfTokenizer h ? h.DecodeToken(prev, id, skipSpecialTokens: false) : tok.DecodeToken(prev, id);

    /// <summary>Quoted with control characters escaped so whitespace tokens are visible.</summary>
    private static string Quote(string s)
    {
        var sb = new StringBuilder("'");
        foreach (char c in s)
            sb.Append(c switch { '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", '\'' => "\\'", '\\' => "\\\\", < ' ' => $"\\x{(int)c:x2}", _ => c.ToString() });
        return sb.Append('\'').ToString();
    }
}
