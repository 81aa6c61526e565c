// Parsing and printing byte counts such as "6GiB", "512MB", "1.5G".
using System.Globalization;

namespace VkPeft.Runtime.Vulkan;

public static class ByteSize
{
    /// <summary>Parses a size with an optional unit (B, KB/KiB/K, MB/MiB/M, GB/GiB/G, TB/TiB/T; K/M/G/T are binary). Throws FormatException naming <paramref name="what"/>.</summary>
    public static ulong Parse(string text, string what)
    {
        var s = text.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.')) i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value < 0)
            throw new FormatException($"{what}: '{text}' is not a size (examples: 6GiB, 512MiB, 8G)");
        var unit = s[i..].Trim().ToUpperInvariant();
        double mult = unit switch
        {
            "" or "B" => 1,
            "K" or "KIB" => 1024.0, "KB" => 1e3,
            "M" or "MIB" => 1024.0 * 1024, "MB" => 1e6,
            "G" or "GIB" => 1024.0 * 1024 * 1024, "GB" => 1e9,
            "T" or "TIB" => 1024.0 * 1024 * 1024 * 1024, "TB" => 1e12,
            _ => throw new FormatException($"{what}: unknown unit '{s[i..]}' in '{text}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"),
        };
        return (ulong)Math.Round(value * mult);
    }

    /// <summary>Human-readable binary size: 1.50 GiB.</summary>
    public static string Format(ulong bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : v.ToString(v >= 100 ? "F0" : v >= 10 ? "F1" : "F2", CultureInfo.InvariantCulture) + " " + units[u];
    }

    public static string Format(long bytes) => bytes < 0 ? "-" + Format((ulong)(-bytes)) : Format((ulong)bytes);
}
