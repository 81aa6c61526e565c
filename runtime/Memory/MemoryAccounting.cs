// Live and peak bytes per memory category, plus the device memory actually reserved in blocks.
namespace VkPeft.Runtime.Memory;

public sealed class MemoryAccounting
{
    private static readonly int CategoryCount = Enum.GetValues<MemoryCategory>().Length;
    private readonly long[] _current = new long[CategoryCount];
    private readonly long[] _peak = new long[CategoryCount];
    private readonly object _lock = new();

    public long ReservedBytes { get; private set; }
    public long PeakReservedBytes { get; private set; }
    public long LiveBytes { get; private set; }
    public long PeakLiveBytes { get; private set; }

    public long Current(MemoryCategory c) { lock (_lock) return _current[(int)c]; }
    public long Peak(MemoryCategory c) { lock (_lock) return _peak[(int)c]; }

    /// <summary>Category → live bytes now.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> CurrentByCategory()
    {
        lock (_lock) return Enum.GetValues<MemoryCategory>().ToDictionary(c => c, c => _current[(int)c]);
    }

    /// <summary>Category → highest live bytes seen.</summary>
    public IReadOnlyDictionary<MemoryCategory, long> PeakByCategory()
    {
        lock (_lock) return Enum.GetValues<MemoryCategory>().ToDictionary(c => c, c => _peak[(int)c]);
    }

    /// <summary>Forgets peaks (sets them to the current values), to measure one phase.</summary>
    public void ResetPeaks()
    {
        lock (_lock)
        {
            Array.Copy(_current, _peak, CategoryCount);
            PeakLiveBytes = LiveBytes;
            PeakReservedBytes = ReservedBytes;
        }
    }

    internal void Charge(MemoryCategory c, long bytes)
    {
        lock (_lock)
        {
            _current[(int)c] += bytes;
            if (_current[(int)c] > _peak[(int)c]) _peak[(int)c] = _current[(int)c];
            LiveBytes += bytes;
            if (LiveBytes > PeakLiveBytes) PeakLiveBytes = LiveBytes;
        }
    }

    internal void Reserve(long bytes)
    {
        lock (_lock)
        {
            ReservedBytes += bytes;
            if (ReservedBytes > PeakReservedBytes) PeakReservedBytes = ReservedBytes;
        }
    }
}
