// Locates the shared golden data (../shared next to the repository) that tests read but the project never copies in.
namespace VkPeft.Tests.Support;

public static class SharedData
{
    private static readonly Lazy<string> RootLazy = new(FindRoot);

    /// <summary>Absolute path of the shared folder (env VKPEFT_SHARED overrides).</summary>
    public static string Root => RootLazy.Value;

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    private static string FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("VKPEFT_SHARED");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return System.IO.Path.GetFullPath(env);
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Runtime.sln")))
            {
                var shared = System.IO.Path.Combine(dir.Parent?.FullName ?? dir.FullName, "shared");
                if (Directory.Exists(shared)) return shared;
                throw new DirectoryNotFoundException($"shared data not found at {shared} (expected next to the repository)");
            }
            dir = dir.Parent;
        }
        throw new DirectoryNotFoundException("could not find the repository root (Runtime.sln) above " + AppContext.BaseDirectory);
    }
}
