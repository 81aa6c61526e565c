// Models the speed benchmarks run: stories260K from the shared folder (or its built-in shape with random weights) and
// random TinyLlama-1.1B-shaped slices.
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;

namespace VkPeft.Bench;

public static class BenchModels
{
    /// <summary>stories260K: the file at <paramref name="path"/>, else ../shared/models/stories260K next to the repository, else vkpeft's cache, else random.</summary>
    public static (string Name, LlamaConfig Config, LlamaWeights Weights) Stories(string? path)
    {
        path ??= FindShared("models", "stories260K", "stories260K.bin");
        if (path == null || !File.Exists(path)) path = FindCached();
        if (path != null && File.Exists(path))
        {
            var (c, w) = VkPeft.Peft.Formats.Llama2cCheckpoint.Read(path);
            return ("stories260K", c, w);
        }
        var rc = ModelCatalog.Get("stories260K");
        return ("stories260K (random weights)", rc, ModelCatalog.RandomWeights(rc));
    }

    /// <summary>The first <paramref name="layers"/> layers of a random TinyLlama-1.1B with its full vocabulary.</summary>
    public static (string Name, LlamaConfig Config, LlamaWeights Weights) TinyLlama(int layers)
    {
        var full = ModelCatalog.Get("tinyllama-1.1b");
        var c = ModelCatalog.Slice(full, Math.Min(layers, full.NLayers));
        string name = c.NLayers == full.NLayers ? "tinyllama-1.1b (random)" : $"tinyllama-1.1b slice: {c.NLayers} of {full.NLayers} layers (random)";
        return (name, c, ModelCatalog.RandomWeights(c));
    }

    /// <summary>stories260K.bin in vkpeft's cache (where the demo downloads it), or null.</summary>
    private static string? FindCached()
    {
        var cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        var path = Path.Combine(cache, "vkpeft", "stories260K", "stories260K.bin");
        return File.Exists(path) ? path : null;
    }

    private static string? FindShared(params string[] parts)
    {
        var env = Environment.GetEnvironmentVariable("VKPEFT_SHARED");
        if (!string.IsNullOrEmpty(env)) return Path.Combine([env, .. parts]);
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln")))
                return Path.Combine([dir.Parent?.FullName ?? dir.FullName, "shared", .. parts]);
        return null;
    }
}
