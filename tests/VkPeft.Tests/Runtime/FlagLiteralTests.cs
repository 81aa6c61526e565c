// Only the command line knows flag names: library code (quant, runtime, peft, serve) names a setting by its identity
// (SettingException and the *Settings classes) and the CLI spells it. The one place a library file may spell a flag is a
// method's own option declaration (new MethodOption("--rank", …)): a method owns its command-line options.
using System.Text.RegularExpressions;
using VkPeft.Cli;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Models;

namespace VkPeft.Tests.Runtime;

public sealed class FlagLiteralTests
{
    /// <summary>A string literal (plain, interpolated or verbatim) that starts with a flag: "--rank", $"--steps …".</summary>
    private static readonly Regex FlagLiteral = new(@"(?<![\w""])(?:\$@|@\$|\$|@)?""--[a-z]", RegexOptions.Compiled);

    /// <summary>A method option's declaration, whose first argument is its own flag.</summary>
    private static readonly Regex OptionDeclaration = new(@"new(?:\s+MethodOption)?\(\s*""--[a-z][a-z0-9-]*""", RegexOptions.Compiled);

    private static string Root()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("repository root (Runtime.sln) not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Every flag literal in library sources outside a method option declaration, as file:line: text.</summary>
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
                    if (line.StartsWith("//", StringComparison.Ordinal)) continue;
                    bool inMethods = rel.StartsWith(Path.Combine("peft", "Peft", "Methods") + Path.DirectorySeparatorChar, StringComparison.Ordinal);
                    string rest = inMethods ? OptionDeclaration.Replace(line, "new(") : line;
                    if (FlagLiteral.IsMatch(rest)) found.Add($"{rel}:{i + 1}: {line}");
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
    public void TheCheckFindsAFlagLiteralAndAllowsAnOptionDeclaration()
    {
        using var dir = new TempDir();
        var methods = Path.Combine(dir.Path, "peft", "Peft", "Methods", "Toy");
        Directory.CreateDirectory(methods);
        foreach (var f in new[] { "quant", "runtime", Path.Combine("peft", "Serve") }) Directory.CreateDirectory(Path.Combine(dir.Path, f));
        File.WriteAllText(Path.Combine(methods, "ToyMethod.cs"),
            "new(\"--toy-size\", \"size\", \"1\", (a, v) => a);\n// \"--in-a-comment\" is fine\nthrow new FormatException($\"--toy-size must be ≥ 1\");\n");
        File.WriteAllText(Path.Combine(dir.Path, "runtime", "Thing.cs"), "var s = \"--device 0\";\nvar t = @\"--verbatim\";\n");
        var found = Violations(dir.Path);
        Assert.Equal(3, found.Count);
        Assert.Contains(found, v => v.Contains("ToyMethod.cs:3", StringComparison.Ordinal));
        Assert.Contains(found, v => v.Contains("Thing.cs:1", StringComparison.Ordinal));
        Assert.Contains(found, v => v.Contains("Thing.cs:2", StringComparison.Ordinal));
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
