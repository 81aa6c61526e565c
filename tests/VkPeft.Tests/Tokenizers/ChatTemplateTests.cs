// Chat templates: the real Llama 3 template reproduces Hugging Face's rendered conversations and ids exactly; a
// template written for these tests exercises the Jinja subset (namespace, loop variables and filter, for-else,
// if/elif/else, slices, filters, tests, methods, whitespace control, trim_blocks/lstrip_blocks) against renders made
// with Python's jinja2 in transformers' settings; unsupported features and raise_exception are clear errors.
using System.Text;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Tokenizers;

using VkPeft.Tests.Support;

namespace VkPeft.Tests.Tokenizers;

public sealed class ChatTemplateTests
{
    [SharedDataFact("tokenizers/llama3")]
    public void Llama3TemplateRendersAsHuggingFace()
    {
        var tok = TokenizerGolden.Tokenizer("llama3");
        var template = ChatTemplate.Of(tok);
        var failures = new StringBuilder();
        int cases = 0;
        foreach (var c in TokenizerGolden.Expected("llama3").GetProperty("chat_cases").EnumerateArray())
        {
            cases++;
            var messages = c.GetProperty("messages").EnumerateArray()
                .Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();
            string rendered = template.Render(messages, c.GetProperty("add_generation_prompt").GetBoolean());
            if (rendered != c.GetProperty("rendered").GetString()) failures.AppendLine($"{c.GetProperty("id")}: rendered {rendered}");
            if (!tok.Encode(rendered, addSpecialTokens: false).SequenceEqual(TokenizerGolden.Ints(c.GetProperty("ids"))))
                failures.AppendLine($"{c.GetProperty("id")}: ids differ");
        }
        Assert.Equal(3, cases);
        Assert.True(failures.Length == 0, failures.ToString());
    }

    private const string Template = "{#- A template written for the tests: system first, ChatML-style turns, Mistral-style [INST] for odd users -#}\n{%- set ns = namespace(system='', turns=0) -%}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- set ns.system = messages[0]['content'] | trim -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{{ bos_token }}\n{%- if ns.system %}<<SYS>>{{ ns.system ~ '|' ~ ns.system | length }}<</SYS>>\n{% endif %}\n{% for message in loop_messages if message.role != 'tool' %}\n    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n    {% endif %}\n    {% set ns.turns = ns.turns + 1 %}\n    {% if message.role == 'user' and loop.index is odd %}\n[INST] {{ message.content.strip() }} [/INST]\n    {%- elif message.role == 'user' -%}\n<|im_start|>user\n{{ message['content'] }}<|im_end|>\n    {% else %}\n{{- ' ' + message['content'] | trim + eos_token if loop.last else ' ' ~ message.content.upper() -}}\n    {% endif %}\n{% else %}\n(no messages)\n{% endfor %}\n{%- if add_generation_prompt and loop_messages | length > 0 and loop_messages[-1].role == 'user' %}\n{{ 'ASSISTANT:' if extra is not defined else extra }} {{ ns.turns }} {{ [1, 2, 'x'] | join(',') }} {{ {'a': 1, 'b': [true, none]} | tojson }}\n{%- endif %}\n{{ messages | length }}{{ \"-\" * 3 }}{{ 7 // 2 }}{{ 'yes' if 'lo' in 'hello' else 'no' }}{{ messages[0].missing is defined }}{{ none is none }}{{ messages[0].content[:5] }}";

    public static TheoryData<ChatMessage[], bool, string> JinjaCases => new()
    {
        { new ChatMessage[] { new ChatMessage("system", "  Be brief.  "), new ChatMessage("user", " Hi there "), new ChatMessage("assistant", "Hello!"), new ChatMessage("user", "Again?") }, true, "<s><<SYS>>Be brief.|9<</SYS>>\n[INST] Hi there [/INST] HELLO![INST] Again? [/INST]ASSISTANT: 3 1,2,x {\"a\": 1, \"b\": [true, null]}4---3yesFalseTrue  Be " },
        { new ChatMessage[] { new ChatMessage("user", "One"), new ChatMessage("tool", "ignored"), new ChatMessage("assistant", " answer  ") }, false, "<s>[INST] One [/INST] answer</s>3---3yesFalseTrueOne" },
        { new ChatMessage[] { new ChatMessage("system", "only system") }, true, "<s><<SYS>>only system|11<</SYS>>\n(no messages)\n1---3yesFalseTrueonly " },
    };

    [Theory, MemberData(nameof(JinjaCases))]
    public void JinjaSubsetRendersAsPythonJinja(ChatMessage[] messages, bool addGenerationPrompt, string expected)
    {
        var t = new ChatTemplate(Template, "tokenizer_config.json", "<s>", "</s>");
        Assert.Equal(expected, t.Render(messages, addGenerationPrompt));
    }

    [Theory]
    [InlineData("a\n", "a")]
    [InlineData("a\n\n", "a\n")]
    [InlineData("{% if true %}x{% endif %}\n", "x")]
    [InlineData("a\r\n", "a")]
    [InlineData("  {% for m in messages %}\n[{{ m.role }}]\n  {%- endfor %}", "[user]")]
    public void WhitespaceAsJinja2(string source, string expected) =>
        Assert.Equal(expected, new ChatTemplate(source, "cfg.json").Render([new ChatMessage("user", "x")], false));

    [Fact]
    public void ToJsonAsTransformers()
    {
        // Expected output from Python's jinja2 with transformers' tojson (json.dumps, ensure_ascii=False).
        const string Source = "{{ {'name': 'wörld \"q\"\\n', 'n': [1, 2.5, none, true], 'e': {}} | tojson(indent=2) }}|{{ messages | tojson }}|{{ x | default('d', boolean=true) }}";
        const string Expected = "{\n  \"name\": \"wörld \\\"q\\\"\\n\",\n  \"n\": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n  \"e\": {}\n}|[{\"role\": \"user\", \"content\": \"Héllo <b>&\"}]|d";
        Assert.Equal(Expected, new ChatTemplate(Source, "cfg.json").Render([new ChatMessage("user", "Héllo <b>&")], false));
    }

    [Fact]
    public void RaiseExceptionIsAnErrorNamingTheTemplate()
    {
        var t = new ChatTemplate(Template, "cfg.json", "<s>", "</s>");
        var e = Assert.Throws<ModelFormatException>(() => t.Render([new ChatMessage("assistant", "x")], false));
        Assert.Equal("cfg.json: chat_template: the chat template raised: Conversation roles must alternate user/assistant/user/assistant/...", e.Message);
    }

    [Theory]
    [InlineData("{% macro m() %}x{% endmacro %}", "'{% macro %}'")]
    [InlineData("{{ messages | map(attribute='role') }}", "filter 'map'")]
    [InlineData("{% for m in messages recursive %}{% endfor %}", "recursive")]
    [InlineData("{% if true %}x", "missing {% endif %}")]
    [InlineData("{{ x is divisibleby(3) }}", "'is divisibleby'")]
    public void UnsupportedFeaturesAreRefusedWhenLoaded(string source, string mentioned)
    {
        var e = Assert.Throws<ModelFormatException>(() => new ChatTemplate(source, "cfg.json"));
        Assert.Equal("chat_template", e.Field);
        Assert.Contains(mentioned, e.Message, StringComparison.Ordinal);
    }
}
