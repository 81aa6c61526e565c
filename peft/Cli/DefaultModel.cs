// Finds the demo's default model, stories260K (a real pretrained tiny Llama in llama2.c format): ../shared next to the
// repository, a local cache, or a download from its public home with a progress bar and a SHA-256 check.
using System.Security.Cryptography;

namespace VkPeft.Cli;

public static class DefaultModel
{
    private const string BaseUrl = "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/";

    public static readonly (string File, string Sha256)[] Files =
    [
        ("stories260K.bin", "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"),
        ("tok512.bin", "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"),
    ];

    /// <summary>Path of stories260K.bin: VKPEFT_DEMO_MODEL, ../shared/models/stories260K, the cache, or a fresh download.</summary>
    public static string Locate()
    {
        var env = Environment.GetEnvironmentVariable("VKPEFT_DEMO_MODEL");
        if (!string.IsNullOrEmpty(env)) return File.Exists(env) ? env : throw new FileNotFoundException($"VKPEFT_DEMO_MODEL: '{env}' does not exist");
        return LocateStories260K();
    }

    /// <summary>Path of stories260K.bin (tok512.bin beside it): ../shared/models/stories260K, the cache, or a fresh download.</summary>
    public static string LocateStories260K()
    {
        foreach (var dir in Candidates())
            if (Files.All(f => File.Exists(Path.Combine(dir, f.File)))) return Path.Combine(dir, Files[0].File);
        var cache = CacheDir();
        Directory.CreateDirectory(cache);
        foreach (var (file, sha) in Files)
        {
            var target = Path.Combine(cache, file);
            if (File.Exists(target) && Sha256Of(target) == sha) continue;
            Download(BaseUrl + file, target, sha);
        }
        return Path.Combine(cache, Files[0].File);
    }

    private static IEnumerable<string> Candidates()
    {
        // The repository root is where the launcher runs from; shared/ sits beside it.
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln")) && dir.Parent != null)
                yield return Path.Combine(dir.Parent.FullName, "shared", "models", "stories260K");
            dir = dir.Parent;
        }
        yield return Path.Combine(Directory.GetCurrentDirectory(), "..", "shared", "models", "stories260K");
        yield return CacheDir();
    }

    private static string CacheDir() => Path.Combine(
        Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
        "vkpeft", "stories260K");

    private static void Download(string url, string target, string sha)
    {
        var tmp = target + ".download";
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
            using var response = http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead).GetAwaiter().GetResult();
            response.EnsureSuccessStatusCode();
            long total = response.Content.Headers.ContentLength ?? 1;
            using (var src = response.Content.ReadAsStream())
            using (var dst = File.Create(tmp))
            {
                Progress.Run($"downloading {Path.GetFileName(target)}", total / 1024.0, "KiB", tick =>
                {
                    var buf = new byte[1 << 16];
                    long done = 0;
                    int n;
                    while ((n = src.Read(buf)) > 0)
                    {
                        dst.Write(buf, 0, n);
                        done += n;
                        tick(done / 1024.0);
                    }
                });
            }
            var got = Sha256Of(tmp);
            if (got != sha) throw new InvalidDataException($"{url}: checksum mismatch (got {got}, expected {sha}); not using it");
            File.Move(tmp, target, overwrite: true);
        }
        catch (HttpRequestException e)
        {
            throw new FileNotFoundException(
                $"the demo's model stories260K is not here and could not be downloaded ({e.Message}). Offline? Copy stories260K.bin and tok512.bin " +
                $"(from {BaseUrl}) into {CacheDir()}, or set VKPEFT_DEMO_MODEL to a llama2.c model with its tokenizer beside it.");
        }
        catch (TaskCanceledException)
        {
            throw new FileNotFoundException($"downloading {url} timed out. Copy stories260K.bin and tok512.bin into {CacheDir()} by hand, or set VKPEFT_DEMO_MODEL.");
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static string Sha256Of(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }
}
