// Per-kernel GPU time gathered from timestamp queries (enabled by --profile / VKPEFT_PROFILE=1).
using System.Globalization;
using System.Text;

namespace VkPeft.Runtime.Commands;

public sealed class KernelProfile
{
    private readonly Dictionary<string, (long Count, double Ns)> _entries = [];

    public void Add(string label, double ns)
    {
        _entries.TryGetValue(label, out var e);
        _entries[label] = (e.Count + 1, e.Ns + ns);
    }

    public void Clear() => _entries.Clear();

    public IReadOnlyDictionary<string, (long Count, double Ns)> Entries => _entries;

    public double TotalNs => _entries.Values.Sum(e => e.Ns);

    /// <summary>A table sorted by total time: kernel, calls, total ms, mean µs, share.</summary>
    public string Format()
    {
        var sb = new StringBuilder();
        double total = Math.Max(TotalNs, 1);
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"kernel",-34} {"calls",8} {"total ms",10} {"mean us",10} {"share",7}");
        foreach (var (label, (count, ns)) in _entries.OrderByDescending(e => e.Value.Ns))
            sb.AppendLine(CultureInfo.InvariantCulture, $"{label,-34} {count,8} {ns / 1e6,10:F3} {ns / 1e3 / count,10:F2} {ns / total,7:P1}");
        sb.AppendLine(CultureInfo.InvariantCulture, $"{"total",-34} {_entries.Values.Sum(e => e.Count),8} {TotalNs / 1e6,10:F3}");
        return sb.ToString();
    }
}
