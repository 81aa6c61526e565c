// Finds the data tests read but the project does not carry: third-party files (the stories260K model and tokenizer,
// published tokenizers) in the shared folder (VKPEFT_SHARED, else ../shared next to the repository), stories260K also in
// vkpeft's cache or downloaded from its public home; and the project's own golden numbers, which live in Fixtures/.
using VkPeft.Cli;

namespace VkPeft.Tests.Support;

public static class SharedData
{
    private static readonly Lazy<string?> RootLazy = new(FindRoot);
    private static readonly Lazy<string> Stories260KDirLazy = new(FindStories260K);

    /// <summary>Absolute path of the shared folder, or null when there is none (a public clone).</summary>
    public static string? Root => RootLazy.Value;

    /// <summary>True when the shared folder holds <paramref name="parts"/>.</summary>
    public static bool Has(params string[] parts) => Root is { } root && Exists(System.IO.Path.Combine([root, .. parts]));

    /// <summary>A file or folder in the shared folder; throws, naming what is missing and why, when it is not there.</summary>
    public static string Path(params string[] parts) =>
        MissingReason(parts) is { } why ? throw new FileNotFoundException(why) : System.IO.Path.Combine([Root!, .. parts]);

    /// <summary>Why <paramref name="parts"/> cannot be read (null when it can): the message tests skip or fail with.</summary>
    public static string? MissingReason(params string[] parts)
    {
        var rel = string.Join('/', parts);
        if (Root == null)
            return $"needs shared/{rel}, a third-party file vkpeft does not distribute; no shared folder found " +
                   "(set VKPEFT_SHARED, or put shared/ next to the repository)";
        return Has(parts) ? null : $"needs {rel} in the shared folder {Root}, which does not have it";
    }

    /// <summary>stories260K.bin or tok512.bin: from the shared folder, else vkpeft's cache, else downloaded (checksum-verified).</summary>
    public static string Stories260K(string file) => System.IO.Path.Combine(Stories260KDirLazy.Value, file);

    /// <summary>One of the project's own golden files in the test project's Fixtures/ folder.</summary>
    public static string Fixture(string name)
    {
        var path = System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures", name);
        return File.Exists(path) ? path : throw new FileNotFoundException($"test fixture {name} is not in {System.IO.Path.GetDirectoryName(path)}");
    }

    private static bool Exists(string path) => File.Exists(path) || Directory.Exists(path);

    private static string FindStories260K()
    {
        if (Has("models", "stories260K", "stories260K.bin") && Has("models", "stories260K", "tok512.bin"))
            return System.IO.Path.Combine(Root!, "models", "stories260K");
        return System.IO.Path.GetDirectoryName(DefaultModel.LocateStories260K())!;
    }

    private static string? FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("VKPEFT_SHARED");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return System.IO.Path.GetFullPath(env);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            if (!File.Exists(System.IO.Path.Combine(dir.FullName, "Runtime.sln"))) continue;
            var shared = System.IO.Path.Combine(dir.Parent?.FullName ?? dir.FullName, "shared");
            return Directory.Exists(shared) ? shared : null;
        }
        return null;
    }
}

/// <summary>A fact that needs third-party files from the shared folder; skipped, with the reason, when they are absent.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class SharedDataFactAttribute : FactAttribute
{
    /// <param name="path">The file or folder inside the shared folder, '/'-separated (e.g. "tokenizers/llama3/tokenizer.json").</param>
    public SharedDataFactAttribute(string path)
    {
        Needs = path;
        if (SharedData.MissingReason(path.Split('/')) is { } why) Skip = why;
    }

    public string Needs { get; }
}

/// <summary>A theory that needs third-party files from the shared folder; skipped, with the reason, when they are absent.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class SharedDataTheoryAttribute : TheoryAttribute
{
    /// <param name="path">The file or folder inside the shared folder, '/'-separated (e.g. "tokenizers/mistral-7b-v0.1").</param>
    public SharedDataTheoryAttribute(string path)
    {
        Needs = path;
        if (SharedData.MissingReason(path.Split('/')) is { } why) Skip = why;
    }

    public string Needs { get; }
}
