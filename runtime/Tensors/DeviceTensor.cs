// A tensor on the device: shape, dtype, and one or more row-aligned segments. A tensor too large for one binding
// (maxStorageBufferRange) or one allocation (maxMemoryAllocationSize) is split along dim 0; kernels dispatch per piece.
using System.Runtime.InteropServices;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Tensors;

/// <summary>Rows [FirstRow, FirstRow+Rows) of a tensor, stored contiguously in one bindable range.</summary>
public readonly record struct TensorSegment(BufferRange Range, long FirstRow, long Rows);

public sealed class DeviceTensor : DisposableObject
{
    private readonly VulkanContext _ctx;
    private readonly DeviceAllocation[] _allocations;   // empty for views
    private readonly TensorSegment[] _segments;

    private DeviceTensor(VulkanContext ctx, string name, DType dtype, long[] shape, MemoryCategory category, MemoryPlace place, DeviceAllocation[] allocations, TensorSegment[] segments)
    {
        _ctx = ctx; Name = name; DType = dtype; Shape = shape; Category = category; Place = place; _allocations = allocations; _segments = segments;
        Count = shape.Aggregate(1L, (a, b) => a * b);
        RowElements = shape.Length == 0 || shape[0] == 0 ? Count : Count / shape[0];
    }

    public string Name { get; }
    public DType DType { get; }
    public long[] Shape { get; }
    public MemoryCategory Category { get; }
    /// <summary>Device memory, or host memory (offloaded state); views report their storage's place.</summary>
    public MemoryPlace Place { get; }
    /// <summary>Number of elements.</summary>
    public long Count { get; }
    /// <summary>Elements per index of dim 0 (the unit segments are cut in).</summary>
    public long RowElements { get; }
    public long Rows => Shape.Length == 0 ? 1 : Shape[0];
    public long Bytes => Count * DType.Size();
    public IReadOnlyList<TensorSegment> Segments => _segments;
    public bool IsView => _allocations.Length == 0;
    public VulkanContext Context => _ctx;

    /// <summary>The single bindable range; throws when the tensor is split (callers then iterate <see cref="Segments"/>).</summary>
    public BufferRange Range
    {
        get
        {
            ThrowIfDisposed();
            if (_segments.Length != 1) throw new InvalidOperationException($"tensor '{Name}' is split into {_segments.Length} segments; this kernel needs it whole");
            return _segments[0].Range;
        }
    }

    public string ShapeString => "[" + string.Join(", ", Shape) + "]";

    public static DeviceTensor Create(VulkanContext ctx, string name, DType dtype, long[] shape, MemoryCategory category) =>
        Create(ctx, name, dtype, shape, category, MemoryPlace.Device);

    /// <summary>A tensor in device memory or, with <see cref="MemoryPlace.Host"/>, in host memory kernels reach over the bus.</summary>
    public static DeviceTensor Create(VulkanContext ctx, string name, DType dtype, long[] shape, MemoryCategory category, MemoryPlace place)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        var arena = ctx.ArenaFor(place);
        if (shape.Any(d => d < 0)) throw new ArgumentException($"tensor '{name}': negative dimension in [{string.Join(", ", shape)}]");
        long count = shape.Aggregate(1L, (a, b) => a * b);
        long rows = shape.Length == 0 ? 1 : shape[0];
        long rowBytes = rows == 0 ? 0 : count / rows * dtype.Size();
        ulong total = (ulong)(count * dtype.Size());
        ulong limit = ctx.Caps.MaxBindingBytes;
        var allocs = new List<DeviceAllocation>();
        var segs = new List<TensorSegment>();
        try
        {
            if (total <= limit || rows <= 1)
            {
                if (total > limit) throw new ArgumentException($"tensor '{name}' {ByteSize.Format(total)} in one row exceeds the largest binding ({ByteSize.Format(limit)})");
                var a = arena.Allocate(DeviceArena.AlignUp(Math.Max(total, 4), 4), category, name);
                allocs.Add(a);
                segs.Add(new TensorSegment(a.Range, 0, rows));
            }
            else
            {
                long perSeg = (long)(limit / (ulong)rowBytes);
                while (perSeg > 1 && perSeg * rowBytes % 4 != 0) perSeg--;
                if (perSeg < 1) throw new ArgumentException($"tensor '{name}': one row ({rowBytes} bytes) exceeds the largest binding ({ByteSize.Format(limit)})");
                for (long r = 0; r < rows; r += perSeg)
                {
                    long n = Math.Min(perSeg, rows - r);
                    var a = arena.Allocate(DeviceArena.AlignUp((ulong)(n * rowBytes), 4), category, $"{name}[{r}:{r + n}]");
                    allocs.Add(a);
                    segs.Add(new TensorSegment(a.Range, r, n));
                }
            }
        }
        catch
        {
            foreach (var a in allocs) arena.Free(a);
            throw;
        }
        var t = new DeviceTensor(ctx, name, dtype, shape.ToArray(), category, place, allocs.ToArray(), segs.ToArray());
        ctx.Register(t);
        return t;
    }

    /// <summary>The same storage with another shape of equal element count. Split tensors must keep segment boundaries on rows.</summary>
    public DeviceTensor Reshape(params long[] shape)
    {
        ThrowIfDisposed();
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != Count) throw new ArgumentException($"cannot reshape '{Name}' {ShapeString} ({Count} elements) to [{string.Join(", ", shape)}]");
        long newRowElems = shape.Length == 0 || shape[0] == 0 ? count : count / shape[0];
        var segs = new TensorSegment[_segments.Length];
        for (int i = 0; i < segs.Length; i++)
        {
            long startElem = _segments[i].FirstRow * RowElements, elems = _segments[i].Rows * RowElements;
            if (_segments.Length > 1 && (startElem % newRowElems != 0 || elems % newRowElems != 0))
                throw new ArgumentException($"cannot reshape split tensor '{Name}' to [{string.Join(", ", shape)}]: segment boundary falls inside a row");
            segs[i] = new TensorSegment(_segments[i].Range, startElem / newRowElems, elems / newRowElems);
        }
        return new DeviceTensor(_ctx, Name, DType, shape.ToArray(), Category, Place, [], segs);
    }

    /// <summary>The same storage under another name (views carved out of a shared buffer keep their own names).</summary>
    public DeviceTensor Named(string name)
    {
        ThrowIfDisposed();
        return new DeviceTensor(_ctx, name, DType, Shape.ToArray(), Category, Place, [], _segments);
    }

    /// <summary>A view of rows [start, start+count) along dim 0.</summary>
    public DeviceTensor RowsView(long start, long count)
    {
        ThrowIfDisposed();
        if (start < 0 || count < 0 || start + count > Rows) throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside '{Name}' {ShapeString}");
        long rowBytes = RowElements * DType.Size();
        var segs = new List<TensorSegment>();
        foreach (var s in _segments)
        {
            long a = Math.Max(start, s.FirstRow), b = Math.Min(start + count, s.FirstRow + s.Rows);
            if (a >= b) continue;
            segs.Add(new TensorSegment(s.Range.Slice((ulong)((a - s.FirstRow) * rowBytes), (ulong)((b - a) * rowBytes)), a - start, b - a));
        }
        if (segs.Count == 0) segs.Add(new TensorSegment(_segments[0].Range.Slice(0, 0), 0, 0));
        var shape = Shape.ToArray();
        shape[0] = count;
        return new DeviceTensor(_ctx, $"{Name}[{start}:{start + count}]", DType, shape, Category, Place, [], segs.ToArray());
    }

    public void Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        ThrowIfDisposed();
        var bytes = MemoryMarshal.AsBytes(data);
        if (bytes.Length != Bytes) throw new ArgumentException($"upload to '{Name}' {ShapeString} {DType}: got {bytes.Length} bytes, need {Bytes}");
        long rowBytes = RowElements * DType.Size();
        foreach (var s in _segments)
            Transfers.Upload(_ctx, s.Range, bytes.Slice((int)(s.FirstRow * rowBytes), (int)(s.Rows * rowBytes)));
    }

    public void Download<T>(Span<T> data) where T : unmanaged
    {
        ThrowIfDisposed();
        var bytes = MemoryMarshal.AsBytes(data);
        if (bytes.Length != Bytes) throw new ArgumentException($"download of '{Name}' {ShapeString} {DType}: got room for {bytes.Length} bytes, need {Bytes}");
        long rowBytes = RowElements * DType.Size();
        foreach (var s in _segments)
            Transfers.Download(_ctx, s.Range, bytes.Slice((int)(s.FirstRow * rowBytes), (int)(s.Rows * rowBytes)));
    }

    public T[] ToArray<T>() where T : unmanaged
    {
        var result = new T[Bytes / Marshal.SizeOf<T>()];
        Download<T>(result);
        return result;
    }

    protected override void DisposeCore()
    {
        foreach (var a in _allocations) a.Arena.Free(a);
    }

    public override string ToString() => $"{Name} {ShapeString} {DType} ({Category}{(Place == MemoryPlace.Host ? ", host" : "")}, {_segments.Length} segment(s))";
}
