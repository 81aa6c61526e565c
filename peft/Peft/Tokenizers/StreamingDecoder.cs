// Text of a growing token sequence, a piece at a time, that never splits a UTF-8 character: while the text decoded
// so far ends in U+FFFD (a character whose bytes are still arriving) or no longer extends what was printed, the
// tokens are held — at most MaxHeld of them, the longest a UTF-8 character can span — and printed once the character
// is complete. The window restarts after a newline so each step decodes only the current line.

namespace VkPeft.Peft.Tokenizers;

public sealed class StreamingDecoder
{
    /// <summary>A UTF-8 character has at most 4 bytes, so at most 4 byte tokens are ever held.</summary>
    public const int MaxHeld = 4;

    private readonly ITextTokenizer _tok;
    private readonly List<int> _window = [];
    private string _printed = "";       // decoded text of the window already handed out (or shown before streaming)
    private int _held;

    /// <param name="context">The last token already shown (the prompt's last token), or -1: the decoder continues after it.</param>
    public StreamingDecoder(ITextTokenizer tokenizer, int context = -1)
    {
        _tok = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        if (context >= 0) Restart(context);
    }

    /// <summary>The text that <paramref name="id"/> completes ("" while a character is incomplete).</summary>
    public string Push(int id)
    {
        _window.Add(id);
        _held++;
        string full = Text(_window);
        bool extends = full.StartsWith(_printed, StringComparison.Ordinal);
        if (_held < MaxHeld && (!extends || full.EndsWith('\uFFFD'))) return "";
        string piece = extends ? full[_printed.Length..] : full[Math.Min(_printed.Length, full.Length)..];
        _printed = full;
        _held = 0;
        if (piece.EndsWith('\n')) Restart(id);
        return piece;
    }

    /// <summary>Whatever is still held, incomplete characters as U+FFFD (call once generation ends).</summary>
    public string Flush()
    {
        if (_held == 0) return "";
        string full = Text(_window);
        string piece = full.StartsWith(_printed, StringComparison.Ordinal) ? full[_printed.Length..] : full[Math.Min(_printed.Length, full.Length)..];
        _printed = full;
        _held = 0;
        return piece;
    }

    private void Restart(int context)
    {
        _window.Clear();
        _window.Add(context);
        _printed = Text(_window);
        _held = 0;
    }

    /// <summary>Decoded text without special tokens and without clean-up (which would rewrite text already printed).</summary>
    private string Text(List<int> ids) => _tok is HfTokenizer h
        ? h.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids), skipSpecialTokens: true, cleanUp: false)
        : _tok.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids));

    /// <summary>Streams <paramref name="ids"/> through a fresh decoder and returns the pieces (tests, tools).</summary>
    public static List<string> Pieces(ITextTokenizer tokenizer, IEnumerable<int> ids, int context = -1)
    {
        var d = new StreamingDecoder(tokenizer, context);
        var pieces = ids.Select(d.Push).ToList();
        pieces.Add(d.Flush());
        return pieces;
    }

}
