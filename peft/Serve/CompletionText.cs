// The text a completion returns, built token by token: characters are handed out once complete (StreamingDecoder), and
// with stop sequences the text is cut before the first one; while a stop sequence could still be forming, the
// characters that might start it are held back, so a stream never shows text the whole response would not have.
using System.Text;
using VkPeft.Peft.Tokenizers;

namespace VkPeft.Serve;

public sealed class CompletionText
{
    private readonly StreamingDecoder _decoder;
    private readonly string[] _stops;
    private readonly int _holdBack;
    private readonly StringBuilder _all = new();
    private int _emitted;

    /// <param name="lastPromptToken">The prompt's last token (the decoder continues after it).</param>
    public CompletionText(ITextTokenizer tokenizer, int lastPromptToken, IReadOnlyList<string> stops)
    {
        _decoder = new StreamingDecoder(tokenizer, lastPromptToken);
        _stops = [.. stops.Where(s => s.Length > 0)];
        _holdBack = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length) - 1;
    }

    /// <summary>True once a stop sequence appeared: the text ends before it and later tokens add nothing.</summary>
    public bool Stopped { get; private set; }

    /// <summary>Everything handed out so far.</summary>
    public string Text => _all.ToString(0, _emitted);

    /// <summary>The new text that token <paramref name="id"/> releases (possibly empty).</summary>
    public string Push(int id) => Stopped ? "" : Release(_decoder.Push(id), final: false);

    /// <summary>The rest, when generation has ended.</summary>
    public string Flush() => Stopped ? "" : Release(_decoder.Flush(), final: true);

    private string Release(string piece, bool final)
    {
        _all.Append(piece);
        string all = _all.ToString();
        int cut = -1;
        foreach (var stop in _stops)
        {
            int at = all.IndexOf(stop, Math.Max(0, _emitted - stop.Length + 1), StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        int end = cut >= 0 ? cut : final ? all.Length : Math.Max(_emitted, all.Length - _holdBack);
        if (cut >= 0)
        {
            Stopped = true;
            _all.Length = cut;
        }
        string released = all[_emitted..Math.Max(_emitted, end)];
        _emitted = Math.Max(_emitted, end);
        return released;
    }
}
