// A tokenizer's chat template (tokenizer_config.json "chat_template") rendered the way transformers'
// apply_chat_template does: messages, add_generation_prompt, the special-token strings, tools and documents as none.
// A template outside the supported Jinja subset is refused when loaded, naming the file and field.
using System.Globalization;
using VkPeft.Peft.Formats;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Tokenizers;

/// <summary>One chat turn: role ("system", "user", "assistant", …) and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

public sealed class ChatTemplate
{
    private readonly JinjaTemplate _template;
    private readonly Dictionary<string, object?> _specials = [];
    private readonly string _file;

    /// <param name="file">The tokenizer_config.json the template came from (named in errors).</param>
    public ChatTemplate(string source, string file, string? bosToken = null, string? eosToken = null)
    {
        _file = file;
        try { _template = new JinjaTemplate(source); }
        catch (JinjaException e) { throw new ModelFormatException(file, "chat_template", e.Message); }
        if (bosToken != null) _specials["bos_token"] = bosToken;
        if (eosToken != null) _specials["eos_token"] = eosToken;
    }

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ITextTokenizer, ChatTemplate> Parsed = [];

    /// <summary>The template of a tokenizer (parsed once); a clear error when its tokenizer_config.json has none.</summary>
    public static ChatTemplate Of(ITextTokenizer tokenizer) => Parsed.GetValue(tokenizer, Create);

    private static ChatTemplate Create(ITextTokenizer tokenizer)
    {
        if (tokenizer is not HfTokenizer hf)
            throw new SettingException($"chat data and {TokenizerSettings.Chat} need a Hugging Face tokenizer.json with a chat_template in tokenizer_config.json");
        string config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(hf.Path))!, "tokenizer_config.json");
        if (hf.ChatTemplate is null)
            throw new ModelFormatException(config, "chat_template", new SettingMessage($"the tokenizer has no chat template (needed for chat data and {TokenizerSettings.Chat})"));
        return new ChatTemplate(hf.ChatTemplate, config, hf.BosToken, hf.EosToken);
    }

    /// <summary>The conversation as text (encode it without adding special tokens: the template writes them).</summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var vars = new Dictionary<string, object?>(_specials)
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
            ["strftime_now"] = new JinjaTemplate.Callable(a => DateTime.Now.ToString(StrftimeToNet(JinjaTemplate.Str(a.ElementAtOrDefault(0))), CultureInfo.InvariantCulture)),
        };
        try { return _template.Render(vars); }
        catch (JinjaException e) { throw new ModelFormatException(_file, "chat_template", e.Message); }
    }

    /// <summary>
    /// The special token the template writes right after an assistant turn (Llama 3's &lt;|eot_id|&gt;, ChatML's
    /// &lt;|im_end|&gt;), found by rendering a two-turn probe; null when the template writes none there.
    /// </summary>
    public int? EndOfTurnToken(HfTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        const string Reply = "Probe reply text";
        string full;
        try { full = Render([new ChatMessage("user", "Probe question"), new ChatMessage("assistant", Reply)], addGenerationPrompt: false); }
        catch (ModelFormatException) { return null; }
        int at = full.LastIndexOf(Reply, StringComparison.Ordinal);
        if (at < 0) return null;
        int len = tokenizer.SpecialTokenLengthAt(full, at + Reply.Length);
        return len == 0 ? null : tokenizer.TokenToId(full.Substring(at + Reply.Length, len));
    }

    private static string StrftimeToNet(string f) => f
        .Replace("%d", "dd", StringComparison.Ordinal).Replace("%b", "MMM", StringComparison.Ordinal).Replace("%B", "MMMM", StringComparison.Ordinal)
        .Replace("%Y", "yyyy", StringComparison.Ordinal).Replace("%m", "MM", StringComparison.Ordinal).Replace("%H", "HH", StringComparison.Ordinal)
        .Replace("%M", "mm", StringComparison.Ordinal).Replace("%S", "ss", StringComparison.Ordinal);
}
