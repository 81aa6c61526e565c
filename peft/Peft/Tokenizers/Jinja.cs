// The subset of Jinja that chat templates use, rendered as Hugging Face renders them (trim_blocks and lstrip_blocks
// on): text, {{ expressions }}, {% for %} (with loop.*, an inline filter and else), {% if/elif/else %}, {% set %}
// (names, namespace attributes, blocks), {# comments #}, whitespace control with '-', string/number/list/dict
// literals, attribute and item access, slices, arithmetic, ~ concatenation, comparisons, in, and/or/not, ternaries,
// the filters and tests below, string and dict methods, raise_exception, namespace and range. Anything else — an
// unknown statement, filter, test or method — is a JinjaException at parse or render time, never a silent wrong render.
using System.Globalization;
using System.Text;

namespace VkPeft.Peft.Tokenizers;

/// <summary>A template feature outside the supported subset, a syntax error, or raise_exception from the template.</summary>
public sealed class JinjaException(string message) : Exception(message)
{
    public JinjaException() : this("template error") { }
    public JinjaException(string message, Exception inner) : this(message + ": " + inner.Message) { }
}

/// <summary>Jinja's undefined value: renders empty, is falsy, and has undefined attributes.</summary>
public sealed class JinjaUndefined
{
    public static readonly JinjaUndefined Value = new();
    private JinjaUndefined() { }
    public override string ToString() => "";
}

/// <summary>A parsed template; <see cref="Render"/> evaluates it with variables (strings, numbers, bools, lists, dicts).</summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> _body;

    public JinjaTemplate(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        // Like jinja2 (keep_trailing_newline off), one newline at the very end of the source is not output.
        if (source.EndsWith("\r\n", StringComparison.Ordinal)) source = source[..^2];
        else if (source.EndsWith('\n')) source = source[..^1];
        var parser = new Parser(Lexer.Tokenize(Preprocess(source)));
        _body = parser.ParseBody();
        parser.ExpectEnd();
    }

    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var scope = new Scope(null);
        foreach (var (k, v) in variables) scope.Vars[k] = v;
        scope.Vars["raise_exception"] = new Callable(args => throw new JinjaException("the chat template raised: " + Str(args.ElementAtOrDefault(0))));
        scope.Vars["namespace"] = new Callable((args, kw) => new Namespace(kw));
        scope.Vars["range"] = new Callable(args =>
        {
            long a = args.Count > 1 ? ToLong(args[0]) : 0, b = ToLong(args[args.Count > 1 ? 1 : 0]), step = args.Count > 2 ? ToLong(args[2]) : 1;
            var list = new List<object?>();
            for (long i = a; step > 0 ? i < b : i > b; i += step) list.Add(i);
            return list;
        });
        var sb = new StringBuilder();
        foreach (var n in _body) n.Render(scope, sb);
        return sb.ToString();
    }

    /// <summary>lstrip_blocks (whitespace before a block tag that starts its line) and trim_blocks (newline after one).</summary>
    private static string Preprocess(string s)
    {
        var sb = new StringBuilder(s.Length);
        int i = 0;
        while (i < s.Length)
        {
            // lstrip_blocks: at a line start, spaces/tabs followed by {% or {# (not {%+) are dropped.
            if (i == 0 || s[i - 1] == '\n')
            {
                int j = i;
                while (j < s.Length && (s[j] == ' ' || s[j] == '\t')) j++;
                if (j + 1 < s.Length && s[j] == '{' && (s[j + 1] == '%' || s[j + 1] == '#') && !(j + 2 < s.Length && s[j + 2] == '+')) i = j;
            }
            if (i + 1 < s.Length && s[i] == '{' && (s[i + 1] == '%' || s[i + 1] == '#'))
            {
                char close = s[i + 1] == '%' ? '%' : '#';
                int end = FindTagEnd(s, i + 2, close);
                sb.Append(s, i, end + 2 - i);
                i = end + 2;
                // trim_blocks: one newline right after a block tag goes (unless the tag ends with +%}).
                if (i < s.Length && s[i] == '\n' && s[end - 1] != '+') i++;
                else if (i + 1 < s.Length && s[i] == '\r' && s[i + 1] == '\n' && s[end - 1] != '+') i += 2;
                continue;
            }
            if (i + 1 < s.Length && s[i] == '{' && s[i + 1] == '{')
            {
                int end = FindTagEnd(s, i + 2, '}');
                sb.Append(s, i, end + 2 - i);
                i = end + 2;
                continue;
            }
            sb.Append(s[i++]);
        }
        return sb.ToString();
    }

    /// <summary>Index of the closing "%}" / "#}" / "}}" of a tag, skipping string literals inside it.</summary>
    internal static int FindTagEnd(string s, int from, char close)
    {
        char quote = '\0';
        int depth = 0;                  // dict braces inside an expression: "{{ {'a': {}} }}"
        for (int i = from; i + 1 < s.Length; i++)
        {
            char c = s[i];
            if (quote != '\0')
            {
                if (c == '\\') i++;
                else if (c == quote) quote = '\0';
                continue;
            }
            if (close != '#' && (c == '\'' || c == '"')) { quote = c; continue; }
            if (c == close && s[i + 1] == '}' && depth == 0) return i;
            if (close != '#' && c == '{') depth++;
            else if (close != '#' && c == '}') depth--;
        }
        throw new JinjaException($"unclosed tag at offset {from - 2}");
    }

    // ------------------------------------------------------------------ values

    public sealed class Callable
    {
        public Func<List<object?>, Dictionary<string, object?>, object?> Invoke { get; }
        public Callable(Func<List<object?>, object?> f) { Invoke = (a, _) => f(a); }
        public Callable(Func<List<object?>, Dictionary<string, object?>, object?> f) { Invoke = f; }
    }

    internal sealed class Namespace(Dictionary<string, object?> attrs)
    {
        public Dictionary<string, object?> Attrs { get; } = attrs;
    }

    internal sealed class Scope(Scope? parent)
    {
        public Dictionary<string, object?> Vars { get; } = [];
        public object? Get(string name) => Vars.TryGetValue(name, out var v) ? v : parent is null ? JinjaUndefined.Value : parent.Get(name);
        public void Set(string name, object? value) => Vars[name] = value;
    }

    internal static bool Truthy(object? v) => v switch
    {
        null or JinjaUndefined => false,
        bool b => b,
        string s => s.Length > 0,
        long l => l != 0,
        double d => d != 0,
        System.Collections.ICollection c => c.Count > 0,
        _ => true,
    };

    internal static long ToLong(object? v) => v switch
    {
        long l => l,
        double d => (long)d,
        bool b => b ? 1 : 0,
        string s when long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long p) => p,
        _ => throw new JinjaException($"expected an integer, got {Repr(v)}"),
    };

    /// <summary>Python str() of a value, as {{ }} prints it.</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        JinjaUndefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => d == Math.Floor(d) && Math.Abs(d) < 1e16 ? d.ToString("0.0", CultureInfo.InvariantCulture) : d.ToString("R", CultureInfo.InvariantCulture),
        _ => Repr(v),
    };

    /// <summary>Python repr() of a value (lists and dicts print their items this way).</summary>
    internal static string Repr(object? v) => v switch
    {
        string s => "'" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal) + "'",
        List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}",
        null or JinjaUndefined or bool or long or double => Str(v),
        _ => v.ToString() ?? "",
    };

    internal static string ToJson(object? v, int? indent, int depth = 0)
    {
        string nl = indent is { } n ? "\n" + new string(' ', n * (depth + 1)) : "";
        string close = indent is { } m ? "\n" + new string(' ', m * depth) : "";
        string sep = indent is null ? ", " : ",";
        return v switch
        {
            null or JinjaUndefined => "null",
            bool b => b ? "true" : "false",
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => d.ToString("R", CultureInfo.InvariantCulture),
            string s => JsonString(s),
            List<object?> l => l.Count == 0 ? "[]" : "[" + nl + string.Join(sep + nl, l.Select(x => ToJson(x, indent, depth + 1))) + close + "]",
            Dictionary<string, object?> d => d.Count == 0 ? "{}" : "{" + nl + string.Join(sep + nl, d.Select(kv => JsonString(kv.Key) + ": " + ToJson(kv.Value, indent, depth + 1))) + close + "}",
            _ => throw new JinjaException($"tojson cannot serialize {v.GetType().Name}"),
        };
    }

    /// <summary>A JSON string as Python's json.dumps(ensure_ascii=False) writes it (transformers' tojson).</summary>
    private static string JsonString(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
            sb.Append(c switch
            {
                '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", '\b' => "\\b", '\f' => "\\f",
                < ' ' => $"\\u{(int)c:x4}",
                _ => c.ToString(),
            });
        return sb.Append('"').ToString();
    }

    internal static bool JEquals(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (JinjaUndefined, JinjaUndefined) => true,
        (long x, long y) => x == y,
        (long x, double y) => x == y,
        (double x, long y) => x == y,
        (double x, double y) => x == y,
        (bool x, bool y) => x == y,
        (string x, string y) => x == y,
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => JEquals(p.First, p.Second)),
        _ => ReferenceEquals(a, b),
    };

    // ------------------------------------------------------------------ lexer

    internal enum TokKind { Text, ExprOpen, ExprClose, StmtOpen, StmtClose, Name, String, Number, Op, End }

    internal readonly record struct Tok(TokKind Kind, string Value, int Offset);

    internal static class Lexer
    {
        private static readonly string[] Ops = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "=", "?"];

        public static List<Tok> Tokenize(string s)
        {
            var toks = new List<Tok>();
            int i = 0;
            var text = new StringBuilder();
            void FlushText(int at) { if (text.Length > 0) toks.Add(new Tok(TokKind.Text, text.ToString(), at)); text.Clear(); }
            while (i < s.Length)
            {
                if (i + 1 < s.Length && s[i] == '{' && s[i + 1] is '{' or '%' or '#')
                {
                    char kind = s[i + 1];
                    bool trimLeft = i + 2 < s.Length && s[i + 2] == '-';
                    if (trimLeft) { int n = text.Length; while (n > 0 && char.IsWhiteSpace(text[n - 1])) n--; text.Length = n; }
                    FlushText(i);
                    int end = FindTagEnd(s, i + 2, kind == '{' ? '}' : kind);
                    int innerStart = i + 2 + (trimLeft || (i + 2 < s.Length && s[i + 2] == '+') ? 1 : 0);
                    bool trimRight = end - 1 >= innerStart && s[end - 1] == '-';
                    int innerEnd = trimRight || (end - 1 >= innerStart && s[end - 1] == '+') ? end - 1 : end;
                    if (kind != '#')
                    {
                        toks.Add(new Tok(kind == '{' ? TokKind.ExprOpen : TokKind.StmtOpen, "", i));
                        LexInner(s, innerStart, innerEnd, toks);
                        toks.Add(new Tok(kind == '{' ? TokKind.ExprClose : TokKind.StmtClose, "", end));
                    }
                    i = end + 2;
                    if (trimRight) while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                    continue;
                }
                text.Append(s[i++]);
            }
            FlushText(i);
            toks.Add(new Tok(TokKind.End, "", s.Length));
            return toks;
        }

        private static void LexInner(string s, int i, int end, List<Tok> toks)
        {
            while (i < end)
            {
                char c = s[i];
                if (char.IsWhiteSpace(c)) { i++; continue; }
                if (char.IsLetter(c) || c == '_')
                {
                    int j = i;
                    while (j < end && (char.IsLetterOrDigit(s[j]) || s[j] == '_')) j++;
                    toks.Add(new Tok(TokKind.Name, s[i..j], i));
                    i = j;
                    continue;
                }
                if (char.IsDigit(c))
                {
                    int j = i;
                    while (j < end && (char.IsDigit(s[j]) || (s[j] == '.' && j + 1 < end && char.IsDigit(s[j + 1])))) j++;
                    toks.Add(new Tok(TokKind.Number, s[i..j], i));
                    i = j;
                    continue;
                }
                if (c is '\'' or '"')
                {
                    var sb = new StringBuilder();
                    int j = i + 1;
                    while (j < end && s[j] != c)
                    {
                        if (s[j] == '\\' && j + 1 < end)
                        {
                            j++;
                            sb.Append(s[j] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', _ => s[j] });
                        }
                        else sb.Append(s[j]);
                        j++;
                    }
                    if (j >= end) throw new JinjaException($"unterminated string at offset {i}");
                    toks.Add(new Tok(TokKind.String, sb.ToString(), i));
                    i = j + 1;
                    continue;
                }
                string? op = Ops.FirstOrDefault(o => string.CompareOrdinal(s, i, o, 0, o.Length) == 0);
                if (op is null) throw new JinjaException($"unexpected character '{c}' at offset {i}");
                toks.Add(new Tok(TokKind.Op, op, i));
                i += op.Length;
            }
        }
    }

    // ------------------------------------------------------------------ syntax tree

    internal abstract class Node
    {
        public abstract void Render(Scope scope, StringBuilder output);
    }

    private sealed class TextNode(string text) : Node
    {
        public override void Render(Scope scope, StringBuilder output) => output.Append(text);
    }

    private sealed class OutputNode(Expr e) : Node
    {
        public override void Render(Scope scope, StringBuilder output) => output.Append(Str(e.Eval(scope)));
    }

    private sealed class IfNode(List<(Expr? Cond, List<Node> Body)> branches) : Node
    {
        public override void Render(Scope scope, StringBuilder output)
        {
            foreach (var (cond, body) in branches)
                if (cond is null || Truthy(cond.Eval(scope)))
                {
                    foreach (var n in body) n.Render(scope, output);
                    return;
                }
        }
    }

    private sealed class ForNode(List<string> targets, Expr iterable, Expr? filter, List<Node> body, List<Node>? elseBody) : Node
    {
        public override void Render(Scope scope, StringBuilder output)
        {
            var source = iterable.Eval(scope);
            List<object?> items = source switch
            {
                List<object?> l => l,
                Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
                string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
                null or JinjaUndefined => [],
                _ => throw new JinjaException($"cannot loop over {Repr(source)}"),
            };
            if (filter != null)
                items = items.Where(x => { var f = new Scope(scope); Bind(f, x); return Truthy(filter.Eval(f)); }).ToList();
            if (items.Count == 0)
            {
                if (elseBody != null) foreach (var n in elseBody) n.Render(scope, output);
                return;
            }
            // Jinja scoping: a loop body sees outer variables; plain {% set %} inside it does not leak out.
            for (int i = 0; i < items.Count; i++)
            {
                var inner = new Scope(scope);
                Bind(inner, items[i]);
                inner.Set("loop", new Dictionary<string, object?>
                {
                    ["index0"] = (long)i, ["index"] = (long)(i + 1), ["revindex0"] = (long)(items.Count - 1 - i), ["revindex"] = (long)(items.Count - i),
                    ["first"] = i == 0, ["last"] = i == items.Count - 1, ["length"] = (long)items.Count,
                    ["previtem"] = i > 0 ? items[i - 1] : JinjaUndefined.Value, ["nextitem"] = i + 1 < items.Count ? items[i + 1] : JinjaUndefined.Value,
                });
                foreach (var n in body) n.Render(inner, output);
            }
        }

        private void Bind(Scope s, object? item)
        {
            if (targets.Count == 1) { s.Set(targets[0], item); return; }
            if (item is not List<object?> parts || parts.Count != targets.Count)
                throw new JinjaException($"cannot unpack {Repr(item)} into {targets.Count} names");
            for (int k = 0; k < targets.Count; k++) s.Set(targets[k], parts[k]);
        }
    }

    private sealed class SetNode(string name, string? attribute, Expr? value, List<Node>? block) : Node
    {
        public override void Render(Scope scope, StringBuilder output)
        {
            object? v;
            if (block != null)
            {
                var sb = new StringBuilder();
                foreach (var n in block) n.Render(scope, sb);
                v = sb.ToString();
            }
            else v = value!.Eval(scope);
            if (attribute is null) { scope.Set(name, v); return; }
            if (scope.Get(name) is not Namespace ns) throw new JinjaException($"cannot set attribute '{attribute}' of '{name}' (not a namespace)");
            ns.Attrs[attribute] = v;
        }
    }

    // ------------------------------------------------------------------ expressions

    internal abstract class Expr
    {
        public abstract object? Eval(Scope scope);
    }

    private sealed class Literal(object? value) : Expr
    {
        public override object? Eval(Scope scope) => value;
    }

    private sealed class NameExpr(string name) : Expr
    {
        public override object? Eval(Scope scope) => scope.Get(name);
    }

    private sealed class ListExpr(List<Expr> items) : Expr
    {
        public override object? Eval(Scope scope) => items.Select(x => x.Eval(scope)).ToList();
    }

    private sealed class DictExpr(List<(Expr Key, Expr Value)> items) : Expr
    {
        public override object? Eval(Scope scope) => items.ToDictionary(kv => Str(kv.Key.Eval(scope)), kv => kv.Value.Eval(scope));
    }

    private sealed class GetAttr(Expr target, string name) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var t = target.Eval(scope);
            return t switch
            {
                Dictionary<string, object?> d => d.TryGetValue(name, out var v) ? v : JinjaUndefined.Value,
                Namespace ns => ns.Attrs.TryGetValue(name, out var v) ? v : JinjaUndefined.Value,
                _ => new BoundMethod(t, name),
            };
        }
    }

    private sealed class GetItem(Expr target, Expr key) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var t = target.Eval(scope);
            var k = key.Eval(scope);
            switch (t)
            {
                case Dictionary<string, object?> d:
                    return k is string ks && d.TryGetValue(ks, out var v) ? v : JinjaUndefined.Value;
                case Namespace ns:
                    return k is string kn && ns.Attrs.TryGetValue(kn, out var nv) ? nv : JinjaUndefined.Value;
                case List<object?> l:
                    {
                        long i = ToLong(k);
                        if (i < 0) i += l.Count;
                        return i >= 0 && i < l.Count ? l[(int)i] : JinjaUndefined.Value;
                    }
                case string s:
                    {
                        var runes = s.EnumerateRunes().ToList();
                        long i = ToLong(k);
                        if (i < 0) i += runes.Count;
                        return i >= 0 && i < runes.Count ? runes[(int)i].ToString() : JinjaUndefined.Value;
                    }
                case JinjaUndefined:
                    return JinjaUndefined.Value;
                default:
                    throw new JinjaException($"cannot index {Repr(t)}");
            }
        }
    }

    private sealed class SliceExpr(Expr target, Expr? start, Expr? stop, Expr? step) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var t = target.Eval(scope);
            List<object?> items = t switch
            {
                List<object?> l => l,
                string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
                _ => throw new JinjaException($"cannot slice {Repr(t)}"),
            };
            long n = items.Count, st = step is null ? 1 : ToLong(step.Eval(scope));
            if (st == 0) throw new JinjaException("slice step cannot be zero");
            long Clamp(Expr? e, long dflt)
            {
                var v = e?.Eval(scope);
                if (v is null or JinjaUndefined) return dflt;
                long x = ToLong(v);
                if (x < 0) x += n;
                return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
            }
            long a = Clamp(start, st > 0 ? 0 : n - 1), b = Clamp(stop, st > 0 ? n : -1);
            var result = new List<object?>();
            for (long i = a; st > 0 ? i < b : i > b; i += st) result.Add(items[(int)i]);
            return t is string ? string.Concat(result.Cast<string>()) : result;
        }
    }

    /// <summary>A method looked up on a value (string.strip, dict.items …), resolved when called.</summary>
    internal sealed class BoundMethod(object? target, string name)
    {
        public object? Target { get; } = target;
        public string Name { get; } = name;
    }

    private sealed class CallExpr(Expr callee, List<Expr> args, List<(string Name, Expr Value)> kwargs) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var f = callee.Eval(scope);
            var a = args.Select(x => x.Eval(scope)).ToList();
            var kw = kwargs.ToDictionary(k => k.Name, k => k.Value.Eval(scope));
            return f switch
            {
                Callable c => c.Invoke(a, kw),
                BoundMethod m => Methods.Call(m.Target, m.Name, a),
                _ => throw new JinjaException($"{Repr(f)} is not callable"),
            };
        }
    }

    private sealed class FilterExpr(Expr target, string name, List<Expr> args, List<(string Name, Expr Value)> kwargs) : Expr
    {
        public override object? Eval(Scope scope) => Filters.Apply(name, target.Eval(scope), args.Select(a => a.Eval(scope)).ToList(),
            kwargs.ToDictionary(k => k.Name, k => k.Value.Eval(scope)));
    }

    private sealed class TestExpr(Expr target, string name, bool negate, List<Expr> args) : Expr
    {
        public override object? Eval(Scope scope) => negate ^ Tests.Apply(name, target.Eval(scope), args.Select(a => a.Eval(scope)).ToList());
    }

    private sealed class NotExpr(Expr e) : Expr
    {
        public override object? Eval(Scope scope) => !Truthy(e.Eval(scope));
    }

    private sealed class NegExpr(Expr e) : Expr
    {
        public override object? Eval(Scope scope) => e.Eval(scope) switch
        {
            long l => -l,
            double d => -d,
            var v => throw new JinjaException($"cannot negate {Repr(v)}"),
        };
    }

    private sealed class CondExpr(Expr cond, Expr yes, Expr? no) : Expr
    {
        public override object? Eval(Scope scope) => Truthy(cond.Eval(scope)) ? yes.Eval(scope) : no?.Eval(scope) ?? JinjaUndefined.Value;
    }

    private sealed class BinExpr(string op, Expr left, Expr right) : Expr
    {
        public override object? Eval(Scope scope)
        {
            if (op == "and") { var l = left.Eval(scope); return Truthy(l) ? right.Eval(scope) : l; }
            if (op == "or") { var l = left.Eval(scope); return Truthy(l) ? l : right.Eval(scope); }
            var a = left.Eval(scope);
            var b = right.Eval(scope);
            switch (op)
            {
                case "~": return Str(a) + Str(b);
                case "==": return JEquals(a, b);
                case "!=": return !JEquals(a, b);
                case "in": return Contains(b, a);
                case "not in": return !Contains(b, a);
            }
            if (op == "+" && a is string sa && b is string sb) return sa + sb;
            if (op == "+" && a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
            if (op == "*" && a is string rep && b is long times) return string.Concat(Enumerable.Repeat(rep, (int)Math.Max(0, times)));
            if (op is "<" or ">" or "<=" or ">=" && a is string x && b is string y)
            {
                int c = string.CompareOrdinal(x, y);
                return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
            }
            if (a is not (long or double or bool) || b is not (long or double or bool))
                throw new JinjaException($"unsupported operand types for {op}: {Repr(a)} and {Repr(b)}");
            if (a is not double && b is not double && op is not "/")
            {
                long p = ToLong(a), q = ToLong(b);
                return op switch
                {
                    "+" => p + q, "-" => p - q, "*" => p * q,
                    "//" => q == 0 ? throw new JinjaException("division by zero") : (long)Math.Floor((double)p / q),
                    "%" => q == 0 ? throw new JinjaException("modulo by zero") : ((p % q) + q) % q,
                    "**" => (long)Math.Pow(p, q),
                    "<" => p < q, ">" => p > q, "<=" => p <= q, ">=" => p >= q,
                    _ => throw new JinjaException($"unknown operator {op}"),
                };
            }
            double u = a is double da ? da : ToLong(a), w = b is double db ? db : ToLong(b);
            return op switch
            {
                "+" => u + w, "-" => u - w, "*" => u * w, "/" => u / w, "//" => Math.Floor(u / w), "%" => u - w * Math.Floor(u / w), "**" => Math.Pow(u, w),
                "<" => u < w, ">" => u > w, "<=" => u <= w, ">=" => u >= w,
                _ => throw new JinjaException($"unknown operator {op}"),
            };
        }

        private static bool Contains(object? container, object? item) => container switch
        {
            string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new JinjaException("'in <string>' needs a string"),
            List<object?> l => l.Any(x => JEquals(x, item)),
            Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
            Namespace ns => item is string k2 && ns.Attrs.ContainsKey(k2),
            null or JinjaUndefined => false,
            _ => throw new JinjaException($"cannot test membership in {Repr(container)}"),
        };
    }

    // ------------------------------------------------------------------ parser

    private sealed class Parser(List<Tok> toks)
    {
        private int _p;

        private Tok Peek => toks[_p];
        private Tok Next() => toks[_p++];

        private bool IsName(string n, int ahead = 0) => toks[_p + ahead].Kind == TokKind.Name && toks[_p + ahead].Value == n;
        private bool IsOp(string o) => Peek.Kind == TokKind.Op && Peek.Value == o;

        private void ExpectOp(string o)
        {
            if (!IsOp(o)) throw Error($"expected '{o}'");
            _p++;
        }

        private string ExpectName()
        {
            if (Peek.Kind != TokKind.Name) throw Error("expected a name");
            return Next().Value;
        }

        private void Expect(TokKind k, string what)
        {
            if (Peek.Kind != k) throw Error($"expected {what}");
            _p++;
        }

        private JinjaException Error(string what) => new($"{what} at offset {Peek.Offset} (found '{Peek.Value}')");

        public void ExpectEnd()
        {
            if (Peek.Kind != TokKind.End) throw Error("unexpected '{% " + (toks[_p + 1].Value) + " %}'");
        }

        /// <summary>Nodes up to (not including) a {% tag %} named in <paramref name="stops"/>, or the end.</summary>
        public List<Node> ParseBody(params string[] stops)
        {
            var nodes = new List<Node>();
            while (true)
            {
                var t = Peek;
                switch (t.Kind)
                {
                    case TokKind.End:
                        if (stops.Length > 0) throw new JinjaException($"missing {{% {stops[^1]} %}}");
                        return nodes;
                    case TokKind.Text:
                        nodes.Add(new TextNode(Next().Value));
                        break;
                    case TokKind.ExprOpen:
                        _p++;
                        nodes.Add(new OutputNode(ParseExpr()));
                        Expect(TokKind.ExprClose, "'}}'");
                        break;
                    case TokKind.StmtOpen:
                        {
                            var keyword = toks[_p + 1];
                            if (keyword.Kind != TokKind.Name) { _p++; throw Error("expected a statement name"); }
                            if (stops.Contains(keyword.Value)) return nodes;
                            _p += 2;
                            nodes.Add(keyword.Value switch
                            {
                                "if" => (Node)ParseIf(),
                                "for" => ParseFor(),
                                "set" => ParseSet(),
                                _ => throw new JinjaException($"template statement '{{% {keyword.Value} %}}' (offset {keyword.Offset}) is not supported by vkpeft's chat template renderer"),
                            });
                            break;
                        }
                    default:
                        throw Error("unexpected token");
                }
            }
        }

        private void EndTag(string name)
        {
            Expect(TokKind.StmtOpen, "'{%'");
            if (!IsName(name)) throw Error($"expected {{% {name} %}}");
            _p++;
            Expect(TokKind.StmtClose, "'%}'");
        }

        private IfNode ParseIf()
        {
            var branches = new List<(Expr?, List<Node>)>();
            var cond = ParseExpr();
            Expect(TokKind.StmtClose, "'%}'");
            while (true)
            {
                var body = ParseBody("elif", "else", "endif");
                branches.Add((cond, body));
                Expect(TokKind.StmtOpen, "'{%'");
                string kw = ExpectName();
                if (kw == "elif") { cond = ParseExpr(); Expect(TokKind.StmtClose, "'%}'"); continue; }
                Expect(TokKind.StmtClose, "'%}'");
                if (kw == "else")
                {
                    branches.Add((null, ParseBody("endif")));
                    EndTag("endif");
                }
                return new IfNode(branches);
            }
        }

        private ForNode ParseFor()
        {
            var targets = new List<string> { ExpectName() };
            while (IsOp(",")) { _p++; targets.Add(ExpectName()); }
            if (!IsName("in")) throw Error("expected 'in'");
            _p++;
            var iterable = ParseOr();                   // no ternary here: a trailing 'if' is the loop filter
            Expr? filter = null;
            if (IsName("if")) { _p++; filter = ParseOr(); }
            if (IsName("recursive")) throw new JinjaException("recursive loops are not supported by vkpeft's chat template renderer");
            Expect(TokKind.StmtClose, "'%}'");
            var body = ParseBody("else", "endfor");
            List<Node>? elseBody = null;
            Expect(TokKind.StmtOpen, "'{%'");
            string kw = ExpectName();
            Expect(TokKind.StmtClose, "'%}'");
            if (kw == "else")
            {
                elseBody = ParseBody("endfor");
                EndTag("endfor");
            }
            return new ForNode(targets, iterable, filter, body, elseBody);
        }

        private SetNode ParseSet()
        {
            string name = ExpectName();
            string? attr = null;
            if (IsOp(".")) { _p++; attr = ExpectName(); }
            if (IsOp(","))
                throw new JinjaException("{% set a, b = … %} (tuple assignment) is not supported by vkpeft's chat template renderer");
            if (Peek.Kind == TokKind.StmtClose)
            {
                _p++;
                var block = ParseBody("endset");
                EndTag("endset");
                return new SetNode(name, attr, null, block);
            }
            ExpectOp("=");
            var value = ParseExpr();
            Expect(TokKind.StmtClose, "'%}'");
            return new SetNode(name, attr, value, null);
        }

        public Expr ParseExpr()
        {
            var e = ParseOr();
            if (IsName("if"))
            {
                _p++;
                var cond = ParseOr();
                Expr? no = null;
                if (IsName("else")) { _p++; no = ParseExpr(); }
                return new CondExpr(cond, e, no);
            }
            return e;
        }

        private Expr ParseOr()
        {
            var e = ParseAnd();
            while (IsName("or")) { _p++; e = new BinExpr("or", e, ParseAnd()); }
            return e;
        }

        private Expr ParseAnd()
        {
            var e = ParseNot();
            while (IsName("and")) { _p++; e = new BinExpr("and", e, ParseNot()); }
            return e;
        }

        private Expr ParseNot()
        {
            if (IsName("not")) { _p++; return new NotExpr(ParseNot()); }
            return ParseCompare();
        }

        private Expr ParseCompare()
        {
            var e = ParseMath1();
            while (true)
            {
                if (Peek.Kind == TokKind.Op && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
                {
                    string op = Next().Value;
                    e = new BinExpr(op, e, ParseMath1());
                }
                else if (IsName("in")) { _p++; e = new BinExpr("in", e, ParseMath1()); }
                else if (IsName("not") && IsName("in", 1)) { _p += 2; e = new BinExpr("not in", e, ParseMath1()); }
                else return e;
            }
        }

        private Expr ParseMath1()
        {
            var e = ParseConcat();
            while (IsOp("+") || IsOp("-")) { string op = Next().Value; e = new BinExpr(op, e, ParseConcat()); }
            return e;
        }

        private Expr ParseConcat()
        {
            var e = ParseMath2();
            while (IsOp("~")) { _p++; e = new BinExpr("~", e, ParseMath2()); }
            return e;
        }

        private Expr ParseMath2()
        {
            var e = ParsePow();
            while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) { string op = Next().Value; e = new BinExpr(op, e, ParsePow()); }
            return e;
        }

        private Expr ParsePow()
        {
            var e = ParseUnary();
            while (IsOp("**")) { _p++; e = new BinExpr("**", e, ParseUnary()); }
            return e;
        }

        private Expr ParseUnary()
        {
            if (IsOp("-")) { _p++; return ParseFilters(new NegExpr(ParseUnaryNoFilter())); }
            if (IsOp("+")) { _p++; return ParseFilters(ParseUnaryNoFilter()); }
            return ParseFilters(ParsePostfix(ParsePrimary()));
        }

        private Expr ParseUnaryNoFilter() => IsOp("-") ? new NegExpr(Advance(ParseUnaryNoFilter)) : ParsePostfix(ParsePrimary());

        private Expr Advance(Func<Expr> f) { _p++; return f(); }

        private Expr ParseFilters(Expr e)
        {
            while (true)
            {
                if (IsOp("|"))
                {
                    _p++;
                    string name = ExpectName();
                    Filters.Check(name);
                    var (args, kwargs) = IsOp("(") ? ParseArgs() : ([], []);
                    e = new FilterExpr(e, name, args, kwargs);
                }
                else if (IsName("is"))
                {
                    _p++;
                    bool negate = false;
                    if (IsName("not")) { _p++; negate = true; }
                    string name = ExpectName();
                    Tests.Check(name);
                    var args = IsOp("(") ? ParseArgs().Args : [];
                    e = new TestExpr(e, name, negate, args);
                }
                else return e;
            }
        }

        private Expr ParsePostfix(Expr e)
        {
            while (true)
            {
                if (IsOp("."))
                {
                    _p++;
                    e = new GetAttr(e, ExpectName());
                }
                else if (IsOp("["))
                {
                    _p++;
                    Expr? a = null, b = null, c = null;
                    if (!IsOp(":")) a = ParseExpr();
                    if (IsOp(":"))
                    {
                        _p++;
                        if (!IsOp("]") && !IsOp(":")) b = ParseExpr();
                        if (IsOp(":")) { _p++; if (!IsOp("]")) c = ParseExpr(); }
                        ExpectOp("]");
                        e = new SliceExpr(e, a, b, c);
                    }
                    else
                    {
                        ExpectOp("]");
                        e = new GetItem(e, a!);
                    }
                }
                else if (IsOp("("))
                {
                    var (args, kwargs) = ParseArgs();
                    e = new CallExpr(e, args, kwargs);
                }
                else return e;
            }
        }

        private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseArgs()
        {
            ExpectOp("(");
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            while (!IsOp(")"))
            {
                if (Peek.Kind == TokKind.Name && toks[_p + 1].Kind == TokKind.Op && toks[_p + 1].Value == "=")
                {
                    string n = Next().Value;
                    _p++;
                    kwargs.Add((n, ParseExpr()));
                }
                else args.Add(ParseExpr());
                if (!IsOp(",")) break;
                _p++;
            }
            ExpectOp(")");
            return (args, kwargs);
        }

        private Expr ParsePrimary()
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokKind.String:
                    {
                        string s = t.Value;
                        while (Peek.Kind == TokKind.String) s += Next().Value;   // adjacent literals concatenate
                        return new Literal(s);
                    }
                case TokKind.Number:
                    return t.Value.Contains('.', StringComparison.Ordinal)
                        ? new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture))
                        : new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture));
                case TokKind.Name:
                    return t.Value switch
                    {
                        "true" or "True" => new Literal(true),
                        "false" or "False" => new Literal(false),
                        "none" or "None" => new Literal(null),
                        _ => new NameExpr(t.Value),
                    };
                case TokKind.Op when t.Value == "(":
                    {
                        var e = ParseExpr();
                        if (IsOp(",")) throw new JinjaException("tuples are not supported by vkpeft's chat template renderer");
                        ExpectOp(")");
                        return e;
                    }
                case TokKind.Op when t.Value == "[":
                    {
                        var items = new List<Expr>();
                        while (!IsOp("]")) { items.Add(ParseExpr()); if (!IsOp(",")) break; _p++; }
                        ExpectOp("]");
                        return new ListExpr(items);
                    }
                case TokKind.Op when t.Value == "{":
                    {
                        var items = new List<(Expr, Expr)>();
                        while (!IsOp("}"))
                        {
                            var k = ParseExpr();
                            ExpectOp(":");
                            items.Add((k, ParseExpr()));
                            if (!IsOp(",")) break;
                            _p++;
                        }
                        ExpectOp("}");
                        return new DictExpr(items);
                    }
                default:
                    _p--;
                    throw Error("expected a value");
            }
        }
    }

    // ------------------------------------------------------------------ filters, tests, methods

    private static class Filters
    {
        private static readonly HashSet<string> Known =
            ["trim", "length", "count", "upper", "lower", "capitalize", "title", "default", "d", "first", "last", "join", "string", "int", "float",
             "list", "tojson", "items", "reverse", "replace", "safe", "abs", "round", "unique", "indent", "sort"];

        public static void Check(string name)
        {
            if (!Known.Contains(name)) throw new JinjaException($"template filter '{name}' is not supported by vkpeft's chat template renderer");
        }

        public static object? Apply(string name, object? v, List<object?> a, Dictionary<string, object?> kw)
        {
            switch (name)
            {
                case "trim": return Str(v).Trim();
                case "length" or "count":
                    return v switch
                    {
                        string s => (long)s.EnumerateRunes().Count(),
                        System.Collections.ICollection c => (long)c.Count,
                        Namespace ns => (long)ns.Attrs.Count,
                        JinjaUndefined => 0L,
                        _ => throw new JinjaException($"length of {Repr(v)}"),
                    };
                case "upper": return Str(v).ToUpperInvariant();
                case "lower": return Str(v).ToLowerInvariant();
                case "capitalize": { string s = Str(v); return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(); }
                case "title": return Methods.Call(Str(v), "title", []);
                case "default" or "d":
                    {
                        bool boolean = a.Count > 1 ? Truthy(a[1]) : Truthy(kw.GetValueOrDefault("boolean"));
                        return v is JinjaUndefined || (boolean && !Truthy(v)) ? a.ElementAtOrDefault(0) ?? "" : v;
                    }
                case "first": return v switch { List<object?> l => l.Count > 0 ? l[0] : JinjaUndefined.Value, string s => s.Length > 0 ? s[..1] : JinjaUndefined.Value, _ => JinjaUndefined.Value };
                case "last": return v switch { List<object?> l => l.Count > 0 ? l[^1] : JinjaUndefined.Value, string s => s.Length > 0 ? s[^1..] : JinjaUndefined.Value, _ => JinjaUndefined.Value };
                case "join": return string.Join(a.Count > 0 ? Str(a[0]) : "", AsList(v).Select(Str));
                case "string" or "safe": return Str(v);
                case "int": return v is string s0 && double.TryParse(s0, NumberStyles.Float, CultureInfo.InvariantCulture, out double d0) ? (long)d0 : v is double d1 ? (long)d1 : v is long ? v : 0L;
                case "float": return v is long l0 ? (double)l0 : v is double ? v : v is string s1 && double.TryParse(s1, NumberStyles.Float, CultureInfo.InvariantCulture, out double d2) ? d2 : 0.0;
                case "list": return AsList(v);
                case "tojson":
                    {
                        var indent = a.Count > 0 ? a[0] : kw.GetValueOrDefault("indent");
                        return ToJson(v, indent is long n ? (int)n : null);
                    }
                case "items": return v is Dictionary<string, object?> dict ? dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList() : throw new JinjaException("items of a non-mapping");
                case "reverse": return v is string rs ? new string(rs.Reverse().ToArray()) : AsList(v).AsEnumerable().Reverse().ToList();
                case "replace": return Str(v).Replace(Str(a[0]), Str(a[1]), StringComparison.Ordinal);
                case "abs": return v is long al ? Math.Abs(al) : v is double ad ? Math.Abs(ad) : throw new JinjaException("abs of a non-number");
                case "round": return Math.Round(v is long rl ? rl : v is double rd ? rd : 0, a.Count > 0 ? (int)ToLong(a[0]) : 0, MidpointRounding.ToEven);
                case "unique": { var seen = new List<object?>(); foreach (var x in AsList(v)) if (!seen.Any(y => JEquals(x, y))) seen.Add(x); return seen; }
                case "indent":
                    {
                        string pad = a.Count > 0 ? (a[0] is long w ? new string(' ', (int)w) : Str(a[0])) : "    ";
                        bool first = a.Count > 1 && Truthy(a[1]);
                        var lines = Str(v).Split('\n');
                        return string.Join('\n', lines.Select((line, i) => (i == 0 && !first) || line.Length == 0 ? line : pad + line));
                    }
                case "sort": return AsList(v).OrderBy(x => Str(x), StringComparer.Ordinal).ToList();
                default: throw new JinjaException($"template filter '{name}' is not supported");
            }
        }

        private static List<object?> AsList(object? v) => v switch
        {
            List<object?> l => l,
            string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
            Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
            null or JinjaUndefined => [],
            _ => throw new JinjaException($"{Repr(v)} is not a sequence"),
        };
    }

    private static class Tests
    {
        private static readonly HashSet<string> Known =
            ["defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "mapping", "iterable", "sequence", "true", "false", "odd", "even", "equalto", "eq", "in"];

        public static void Check(string name)
        {
            if (!Known.Contains(name)) throw new JinjaException($"template test 'is {name}' is not supported by vkpeft's chat template renderer");
        }

        public static bool Apply(string name, object? v, List<object?> a) => name switch
        {
            "defined" => v is not JinjaUndefined,
            "undefined" => v is JinjaUndefined,
            "none" => v is null,
            "string" => v is string,
            "number" => v is long or double,
            "integer" => v is long,
            "float" => v is double,
            "boolean" => v is bool,
            "mapping" => v is Dictionary<string, object?> or Namespace,
            "iterable" => v is string or List<object?> or Dictionary<string, object?>,
            "sequence" => v is string or List<object?> or Dictionary<string, object?>,
            "true" => v is true,
            "false" => v is false,
            "odd" => ToLong(v) % 2 != 0,
            "even" => ToLong(v) % 2 == 0,
            "equalto" or "eq" => JEquals(v, a.ElementAtOrDefault(0)),
            "in" => a.ElementAtOrDefault(0) switch { List<object?> l => l.Any(x => JEquals(x, v)), string s => v is string sub && s.Contains(sub, StringComparison.Ordinal), Dictionary<string, object?> d => v is string k && d.ContainsKey(k), _ => false },
            _ => throw new JinjaException($"template test 'is {name}' is not supported"),
        };
    }

    private static class Methods
    {
        public static object? Call(object? target, string name, List<object?> a)
        {
            switch (target)
            {
                case string s:
                    return name switch
                    {
                        "strip" => a.Count > 0 ? s.Trim(Str(a[0]).ToCharArray()) : s.Trim(),
                        "lstrip" => a.Count > 0 ? s.TrimStart(Str(a[0]).ToCharArray()) : s.TrimStart(),
                        "rstrip" => a.Count > 0 ? s.TrimEnd(Str(a[0]).ToCharArray()) : s.TrimEnd(),
                        "upper" => s.ToUpperInvariant(),
                        "lower" => s.ToLowerInvariant(),
                        "title" => string.Join(' ', s.Split(' ').Select(w => w.Length == 0 ? w : char.ToUpperInvariant(w[0]) + w[1..].ToLowerInvariant())),
                        "capitalize" => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
                        "startswith" => s.StartsWith(Str(a[0]), StringComparison.Ordinal),
                        "endswith" => s.EndsWith(Str(a[0]), StringComparison.Ordinal),
                        "replace" => s.Replace(Str(a[0]), Str(a[1]), StringComparison.Ordinal),
                        "split" => (a.Count > 0 && a[0] is string sep ? s.Split(sep) : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)).Select(x => (object?)x).ToList(),
                        "find" => (long)s.IndexOf(Str(a[0]), StringComparison.Ordinal),
                        "count" => (long)(s.Length - s.Replace(Str(a[0]), "", StringComparison.Ordinal).Length) / Math.Max(1, Str(a[0]).Length),
                        "join" => string.Join(s, (a.ElementAtOrDefault(0) as List<object?> ?? []).Select(Str)),
                        "format" => Format(s, a),
                        _ => throw Unsupported("string", name),
                    };
                case Dictionary<string, object?> d:
                    return name switch
                    {
                        "get" => d.TryGetValue(Str(a[0]), out var v) ? v : a.Count > 1 ? a[1] : null,
                        "items" => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                        "keys" => d.Keys.Cast<object?>().ToList(),
                        "values" => d.Values.ToList(),
                        _ => throw Unsupported("dict", name),
                    };
                case List<object?> l:
                    return name switch
                    {
                        "index" => (long)l.FindIndex(x => JEquals(x, a[0])),
                        "count" => (long)l.Count(x => JEquals(x, a[0])),
                        _ => throw Unsupported("list", name),
                    };
                default:
                    throw new JinjaException($"{Repr(target)} has no method or attribute '{name}'");
            }
        }

        private static string Format(string s, List<object?> a)
        {
            var sb = new StringBuilder();
            int k = 0;
            for (int i = 0; i < s.Length; i++)
            {
                if (s[i] == '{' && i + 1 < s.Length && s[i + 1] == '}') { sb.Append(Str(a.ElementAtOrDefault(k++))); i++; }
                else sb.Append(s[i]);
            }
            return sb.ToString();
        }

        private static JinjaException Unsupported(string type, string name) =>
            new($"{type} method '{name}' is not supported by vkpeft's chat template renderer");
    }
}
