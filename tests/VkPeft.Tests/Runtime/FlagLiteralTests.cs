// Only the command line knows flag names: library code (quant, runtime, peft, serve) names a setting by its identity
// (SettingException, SettingMessage and the *Settings classes) and the CLI spells it. The one place a library file may
// spell a flag is a method's own option declaration (new MethodOption("--rank", …) with its description): a method owns
// its command-line options. Comments may mention flags.
using System.Text;
using System.Text.RegularExpressions;
using VkPeft.Cli;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Models;

namespace VkPeft.Tests.Runtime;

public sealed class FlagLiteralTests
{
    /// <summary>A flag anywhere in a string's text: "--rank", "… pass --tokenizer", "(--method adapter)".</summary>
    private static readonly Regex Flag = new(@"(?<![\w-])--[a-z]", RegexOptions.Compiled);

    /// <summary>A method option's declaration, whose first argument is its own flag.</summary>
    private static readonly Regex OptionDeclaration = new(@"new(?:\s+MethodOption)?\(\s*""--[a-z][a-z0-9-]*""", RegexOptions.Compiled);

    /// <summary>
    /// The text of each string literal on one line of C# (plain, verbatim, interpolated; a literal nested in an
    /// interpolation hole is one of its own), up to a line comment; character literals are skipped, so '"' opens no string.
    /// </summary>
    internal static List<string> StringLiterals(string line)
    {
        var found = new List<string>();
        int i = 0;
        while (i < line.Length)
        {
            char c = line[i];
            if (c == '/' && i + 1 < line.Length && line[i + 1] == '/') break;
            if (c == '\'') i = SkipCharLiteral(line, i);
            else if (c == '"') i = ReadString(line, i, found);
            else i++;
        }
        return found;
    }

    /// <summary>The index after the character literal that opens at <paramref name="start"/>.</summary>
    private static int SkipCharLiteral(string line, int start)
    {
        int j = start + 1;
        while (j < line.Length && line[j] != '\'') j += line[j] == '\\' ? 2 : 1;
        return j + 1;
    }

    /// <summary>Reads the literal whose quote is at <paramref name="quote"/> into <paramref name="found"/> (its nested ones after it); returns the index after it.</summary>
    private static int ReadString(string line, int quote, List<string> found)
    {
        bool verbatim = false, interpolated = false;
        for (int k = quote - 1; k >= 0 && line[k] is '$' or '@'; k--)
        {
            verbatim |= line[k] == '@';
            interpolated |= line[k] == '$';
        }
        var text = new StringBuilder();
        var nested = new List<string>();
        int e = quote + 1;
        while (e < line.Length)
        {
            char ch = line[e];
            if (verbatim && ch == '"' && e + 1 < line.Length && line[e + 1] == '"') { text.Append('"'); e += 2; }
            else if (!verbatim && ch == '\\' && e + 1 < line.Length) { text.Append(line, e, 2); e += 2; }
            else if (ch == '"') { e++; break; }
            else if (interpolated && ch == '{' && e + 1 < line.Length && line[e + 1] == '{') { text.Append('{'); e += 2; }
            else if (interpolated && ch == '}' && e + 1 < line.Length && line[e + 1] == '}') { text.Append('}'); e += 2; }
            else if (interpolated && ch == '{') { text.Append("{…}"); e = SkipHole(line, e + 1, nested); }
            else { text.Append(ch); e++; }
        }
        found.Add(text.ToString());
        found.AddRange(nested);
        return e;
    }

    /// <summary>The index after the interpolation hole that starts at <paramref name="start"/> (after its brace); its literals go to <paramref name="found"/>.</summary>
    private static int SkipHole(string line, int start, List<string> found)
    {
        int depth = 0, i = start;
        while (i < line.Length)
        {
            char c = line[i];
            if (c == '\'') i = SkipCharLiteral(line, i);
            else if (c == '"') i = ReadString(line, i, found);
            else if (c == '{') { depth++; i++; }
            else if (c == '}' && depth-- == 0) return i + 1;
            else i++;
        }
        return i;
    }

    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("repository root (Runtime.sln) not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Every string literal in library sources that spells a flag, outside a method option declaration, as file:line: text.</summary>
    internal static List<string> Violations(string root)
    {
        var found = new List<string>();
        foreach (var folder in new[] { "quant", "runtime", Path.Combine("peft", "Peft"), Path.Combine("peft", "Serve") })
            foreach (var file in Directory.EnumerateFiles(Path.Combine(root, folder), "*.cs", SearchOption.AllDirectories))
            {
                string rel = Path.GetRelativePath(root, file);
                if (rel.Split(Path.DirectorySeparatorChar).Any(p => p is "obj" or "bin")) continue;
                var lines = File.ReadAllLines(file);
                for (int i = 0; i < lines.Length; i++)
                {
                    string line = lines[i].TrimStart();
                    if (line.StartsWith("//", StringComparison.Ordinal) || line.StartsWith('*') || line.StartsWith("/*", StringComparison.Ordinal)) continue;
                    bool inMethods = rel.StartsWith(Path.Combine("peft", "Peft", "Methods") + Path.DirectorySeparatorChar, StringComparison.Ordinal);
                    if (inMethods && OptionDeclaration.IsMatch(line)) continue;
                    if (StringLiterals(line).Any(Flag.IsMatch))
                        found.Add($"{rel}:{i + 1}: {line}");
                }
            }
        return found;
    }

    [Fact]
    public void LibraryCodeSpellsNoFlags()
    {
        var violations = Violations(Root());
        Assert.True(violations.Count == 0,
            "library code names command-line flags (throw a SettingException naming the setting, and map it in peft/Cli/SettingFlags.cs):\n"
            + string.Join('\n', violations));
    }

    [Fact]
    public void TheCheckFindsAFlagAnywhereInAStringAndAllowsOptionDeclarationsAndComments()
    {
        using var dir = new TempDir();
        var methods = Path.Combine(dir.Path, "peft", "Peft", "Methods", "Toy");
        Directory.CreateDirectory(methods);
        foreach (var f in new[] { "quant", "runtime", Path.Combine("peft", "Serve") }) Directory.CreateDirectory(Path.Combine(dir.Path, f));
        File.WriteAllText(Path.Combine(methods, "ToyMethod.cs"), string.Join('\n',
            "new(\"--toy-size\", \"size (with --toy-mode)\", \"1\", (a, v) => a);",
            "// \"--in-a-comment\" is fine",
            "throw new FormatException($\"--toy-size must be ≥ 1\");",
            "/// <summary>Set by --toy-size (a doc comment).</summary>",
            "throw new ExportException(\"toys cannot be merged; use --format peft\"); // see --format",
            "char quote = '\"'; var s = \"a-b --c\";",
            "var ok = \"ggml-org/llama.cpp#6536 uses a dash-dash--like -- separator\";") + "\n");
        File.WriteAllText(Path.Combine(dir.Path, "runtime", "Thing.cs"),
            "var s = \"--device 0\";\nvar t = @\"--verbatim\";\nvar u = $\"no tokenizer for '{path}'; pass --tokenizer\";\nvar v = @\"say \"\"hi\"\" then --quote\";\n");
        var found = Violations(dir.Path);
        Assert.Equal(["Thing.cs:1", "Thing.cs:2", "Thing.cs:3", "Thing.cs:4", "ToyMethod.cs:3", "ToyMethod.cs:5", "ToyMethod.cs:6"],
            found.Select(v => Path.GetFileName(v[..v.IndexOf(": ", StringComparison.Ordinal)])).Order(StringComparer.Ordinal).ToArray());
    }

    [Fact]
    public void StringLiteralsAreReadUpToALineComment()
    {
        // f("a", "b \" c", @"d "" e", '"', $"x {f("y", '}')} {{z}} --w"); // "v"
        string line = "f(\"a\", \"b \\\" c\", @\"d \"\" e\", '\"', $\"x {f(\"y\", '}')} {{z}} --w\"); // \"v\"";
        Assert.Equal(["a", "b \\\" c", "d \" e", "x {…} {z} --w", "y"], StringLiterals(line));
    }

    [Fact]
    public void EverySettingLibraryErrorsNameHasAFlag()
    {
        var assemblies = new[] { typeof(VulkanContext).Assembly, typeof(VkPeft.Peft.VkPeftInfo).Assembly, typeof(VkPeft.Serve.ServeHost).Assembly };
        var settings = assemblies.SelectMany(a => a.GetTypes())
            .SelectMany(t => t.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static))
            .Where(f => f.FieldType == typeof(Setting))
            .Select(f => (Field: $"{f.DeclaringType!.Name}.{f.Name}", Setting: (Setting)f.GetValue(null)!))
            .ToList();
        Assert.True(settings.Count >= 40, $"found only {settings.Count} settings");
        Assert.All(settings, s => Assert.True(SettingFlags.Flags.ContainsKey(s.Setting), $"{s.Field} ({s.Setting}) has no flag in SettingFlags"));
        Assert.Equal(settings.Count, settings.Select(s => s.Setting).Distinct().Count());
        Assert.All(SettingFlags.Flags.Values, f => Assert.StartsWith("--", f));
        // A library error renders with the flags on the command line and with setting names in the library.
        var e = new SettingException($"{VkPeft.Peft.Training.TrainSettings.Steps} must be ≥ 1, got {0}; see {VkPeft.Peft.Training.TrainSettings.Batch}");
        Assert.Equal("--steps must be ≥ 1, got 0; see --batch", CliApp.UserError(e));
        Assert.Equal("TrainOptions.Steps must be ≥ 1, got 0; see TrainOptions.Batch", e.Message);
        Assert.Same(VkPeft.Peft.Training.TrainSettings.Steps, e.Setting);
    }
}
