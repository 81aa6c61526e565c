// Streaming decode over every golden case of both real tokenizers: the pieces join to the full decode, and no piece
// shows U+FFFD for a character whose bytes span tokens (Mistral's byte fallback, Llama 3's byte-level pieces).
using System.Text;
using VkPeft.Peft.Tokenizers;

using VkPeft.Tests.Support;

namespace VkPeft.Tests.Tokenizers;

public sealed class StreamingDecoderTests
{
    public static TheoryData<string> Names => new(TokenizerGolden.Names);

    [SharedDataTheory("tokenizers"), MemberData(nameof(Names))]
    public void PiecesJoinToTheDecodeAndNeverSplitACharacter(string name)
    {
        var tok = TokenizerGolden.Tokenizer(name);
        var failures = new StringBuilder();
        int split = 0;
        foreach (var c in TokenizerGolden.Expected(name).GetProperty("cases").EnumerateArray())
        {
            int[] ids = TokenizerGolden.Ints(c.GetProperty("ids"));
            string whole = tok.Decode(ids, skipSpecialTokens: true, cleanUp: false);
            var pieces = StreamingDecoder.Pieces(tok, ids);
            if (string.Concat(pieces) != whole) failures.AppendLine($"{c.GetProperty("id")}: pieces join to '{string.Concat(pieces)}', decode is '{whole}'");
            if (!whole.Contains('\uFFFD') && pieces.Any(p => p.Contains('\uFFFD'))) failures.AppendLine($"{c.GetProperty("id")}: a piece holds U+FFFD");
            for (int i = 1; i < ids.Length; i++)     // how often a token alone would print a broken character
                if (tok.DecodeToken(ids[i - 1], ids[i]).Contains('\uFFFD') && !whole.Contains('\uFFFD')) { split++; break; }
        }
        Assert.True(failures.Length == 0, failures.ToString());
        Assert.True(split > 0, "the golden cases should include characters split across tokens");
    }

    [SharedDataFact("tokenizers/mistral-7b-v0.1")]
    public void ContinuesAfterThePromptsLastToken()
    {
        var tok = TokenizerGolden.Tokenizer("mistral-7b-v0.1");
        int[] ids = tok.Encode("Hello world, 😀 again", addSpecialTokens: true);
        int cut = 3;
        var pieces = StreamingDecoder.Pieces(tok, ids[cut..], context: ids[cut - 1]);
        Assert.Equal(tok.Decode(ids, skipSpecialTokens: true, cleanUp: false)[tok.Decode(ids.AsSpan(0, cut), skipSpecialTokens: true, cleanUp: false).Length..],
            string.Concat(pieces));
    }
}
