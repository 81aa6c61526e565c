// safetensors: memory-mapped reader with full header validation (contiguous tiling, no holes or duplicates,
// dtype sizes), F32/F16/BF16/F64 -> float32 conversion (half and bfloat16 through the quant codec), sharded index support, and an atomic writer.
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using VkPeft.Quant;

namespace VkPeft.Peft.Formats;

/// <summary>One tensor's header entry; offsets are relative to the start of the byte buffer, End exclusive.</summary>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));
}

public static class SafeTensorDTypes
{
    private static readonly Dictionary<string, int> Sizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E4M3"] = 1, ["F8_E5M2"] = 1, ["F8_E8M0"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["F16"] = 2, ["BF16"] = 2,
        ["I32"] = 4, ["U32"] = 4, ["F32"] = 4,
        ["I64"] = 8, ["U64"] = 8, ["F64"] = 8,
    };

    /// <summary>Bytes per element, or null for an unknown or sub-byte dtype.</summary>
    public static int? SizeOf(string dtype) => Sizes.TryGetValue(dtype, out int s) ? s : null;

    /// <summary>Dtypes this project converts to float32.</summary>
    public static bool IsFloatConvertible(string dtype) => dtype is "F32" or "F16" or "BF16" or "F64";

}

public sealed unsafe class SafeTensorsFile : IDisposable
{
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private bool _disposed;

    private SafeTensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, long dataStart, long dataLength,
        Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        DataStart = dataStart;
        DataLength = dataLength;
        Tensors = tensors;
        Metadata = metadata;
        if (view is not null)
        {
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + view.PointerOffset;
        }
    }

    public string Path { get; }

    /// <summary>File offset where the byte buffer starts (8 + header length).</summary>
    public long DataStart { get; }

    public long DataLength { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens, validates the header and memory-maps <paramref name="path"/>.</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        long fileLength = new FileInfo(path).Length;
        if (fileLength < 8) throw new ModelFormatException(path, "header length", $"truncated: file is {fileLength} bytes, needs at least 8");
        Span<byte> lenBytes = stackalloc byte[8];
        byte[] headerBytes;
        using (var fs = File.OpenRead(path))
        {
            fs.ReadExactly(lenBytes);
            ulong n = BitConverter.ToUInt64(lenBytes);
            if (n > MaxHeaderBytes)
                throw new ModelFormatException(path, "header length", $"{n} bytes exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file?)");
            if (8 + (long)n > fileLength)
                throw new ModelFormatException(path, "header length", $"truncated: header claims {n} bytes but the file has only {fileLength - 8} after the length");
            headerBytes = new byte[n];
            fs.ReadExactly(headerBytes);
        }
        long dataStart = 8 + headerBytes.Length;
        long dataLength = fileLength - dataStart;
        var (tensors, metadata) = ParseHeader(path, headerBytes, dataLength);

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        if (fileLength > 0 && dataLength > 0)
        {
            map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
        }
        return new SafeTensorsFile(path, map, view, dataStart, dataLength, tensors, metadata);
    }

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        if (header.Length == 0 || header[0] != (byte)'{')
            throw new ModelFormatException(path, "header", "header JSON must start with '{'");
        using var doc = JsonFields.Parse(path, "header", header);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "header", "header JSON must be an object");
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (!seen.Add(p.Name)) throw new ModelFormatException(path, p.Name, "duplicate entry in the header");
            if (p.Name == "__metadata__")
            {
                if (p.Value.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "__metadata__", "must be an object of strings");
                foreach (var m in p.Value.EnumerateObject())
                {
                    if (m.Value.ValueKind != JsonValueKind.String)
                        throw new ModelFormatException(path, "__metadata__." + m.Name, "metadata values must be strings");
                    metadata[m.Name] = m.Value.GetString()!;
                }
                continue;
            }
            var e = p.Value;
            if (e.ValueKind != JsonValueKind.Object
                || !e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
                || !e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
                || !e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
                throw new ModelFormatException(path, p.Name, "entry needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" ([begin, end])");
            string dtype = dt.GetString()!;
            int size = SafeTensorDTypes.SizeOf(dtype)
                ?? throw new ModelFormatException(path, p.Name, $"unsupported dtype '{dtype}'");
            var shape = new long[sh.GetArrayLength()];
            int i = 0;
            foreach (var d in sh.EnumerateArray())
            {
                if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                    throw new ModelFormatException(path, p.Name, "shape entries must be non-negative integers");
                shape[i++] = v;
            }
            if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
                || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
                throw new ModelFormatException(path, p.Name, "data_offsets must be [begin, end] with 0 <= begin <= end");
            var info = new SafeTensorInfo(p.Name, dtype, shape, begin, end);
            long expectedBytes;
            try
            {
                expectedBytes = checked(info.ElementCount * size);
            }
            catch (OverflowException)
            {
                throw new ModelFormatException(path, p.Name, "shape overflows");
            }
            if (end - begin != expectedBytes)
                throw new ModelFormatException(path, p.Name,
                    $"data_offsets span {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {expectedBytes}");
            tensors[p.Name] = info;
        }

        long at = 0;
        foreach (var t in tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin != at)
                throw new ModelFormatException(path, t.Name,
                    t.Begin > at
                        ? $"data_offsets do not tile the buffer: hole of {t.Begin - at} bytes before this tensor (begins at {t.Begin}, previous data ends at {at})"
                        : $"data_offsets do not tile the buffer: begins at {t.Begin}, overlapping data that ends at {at}");
            at = t.End;
        }
        if (at > dataLength)
        {
            var last = tensors.Values.OrderBy(t => t.End).Last();
            throw new ModelFormatException(path, last.Name, $"truncated: data ends at {at} but the file's buffer holds only {dataLength} bytes");
        }
        if (at < dataLength)
            throw new ModelFormatException(path, "data_offsets", $"data_offsets do not tile the buffer: {dataLength - at} unclaimed bytes after the last tensor");
        return (tensors, metadata);
    }

    public SafeTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info) ? info : throw new ModelFormatException(Path, name, "missing tensor");

    /// <summary>Raw little-endian bytes of a tensor (valid while this file is open).</summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        long len = info.End - info.Begin;
        if (len > int.MaxValue) throw new ModelFormatException(Path, name, $"{len} bytes is too large for one span");
        if (len == 0) return [];
        return new ReadOnlySpan<byte>(_base + DataStart + info.Begin, (int)len);
    }

    /// <summary>A tensor converted to float32 (F32, F16, BF16, F64).</summary>
    public float[] ReadFloat32(string name)
    {
        var info = Info(name);
        if (!SafeTensorDTypes.IsFloatConvertible(info.DType))
            throw new ModelFormatException(Path, name, $"unsupported dtype '{info.DType}' (expected F32, F16, BF16 or F64)");
        var src = GetBytes(name);
        var dst = new float[info.ElementCount];
        switch (info.DType)
        {
            case "F32":
                src.CopyTo(MemoryMarshal.AsBytes(dst.AsSpan()));
                break;
            case "F16":
                {
                    HalfPrecision.FromF16(MemoryMarshal.Cast<byte, ushort>(src), dst);
                    break;
                }
            case "BF16":
                {
                    HalfPrecision.FromBf16(MemoryMarshal.Cast<byte, ushort>(src), dst);
                    break;
                }
            default:
                {
                    var d = MemoryMarshal.Cast<byte, double>(src);
                    for (int i = 0; i < dst.Length; i++) dst[i] = (float)d[i];
                    break;
                }
        }
        return dst;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _map?.Dispose();
    }
}

/// <summary>A set of safetensors files addressed by tensor name: one file, or shards listed by model.safetensors.index.json.</summary>
public sealed class SafeTensorsSet : IDisposable
{
    private readonly Dictionary<string, SafeTensorsFile> _byTensor = new(StringComparer.Ordinal);
    private readonly List<SafeTensorsFile> _files = [];

    /// <summary>The index file or single safetensors file this set came from.</summary>
    public string Source { get; }

    private SafeTensorsSet(string source) => Source = source;

    public IEnumerable<string> Names => _byTensor.Keys;

    /// <summary>Opens a .safetensors file or a model.safetensors.index.json and all its shards.</summary>
    public static SafeTensorsSet Open(string path)
    {
        var set = new SafeTensorsSet(path);
        try
        {
            if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) set.OpenIndex(path);
            else
            {
                var f = SafeTensorsFile.Open(path);
                set._files.Add(f);
                foreach (var name in f.Tensors.Keys) set._byTensor[name] = f;
            }
            return set;
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    private void OpenIndex(string indexPath)
    {
        using var doc = JsonFields.ParseFile(indexPath);
        if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(indexPath, "weight_map", "missing or not an object");
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var shards = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        foreach (var p in map.EnumerateObject())
        {
            string shard = JsonFields.RequireString(indexPath, "weight_map." + p.Name, p.Value);
            if (shard.Contains('/') || shard.Contains('\\') || shard.Contains(".."))
                throw new ModelFormatException(indexPath, "weight_map." + p.Name, $"shard '{shard}' must be a file name in the same folder");
            if (!shards.TryGetValue(shard, out var file))
            {
                string shardPath = System.IO.Path.Combine(dir, shard);
                if (!File.Exists(shardPath)) throw new ModelFormatException(indexPath, "weight_map." + p.Name, $"shard file '{shard}' does not exist");
                file = SafeTensorsFile.Open(shardPath);
                shards[shard] = file;
                _files.Add(file);
            }
            if (!file.Tensors.ContainsKey(p.Name))
                throw new ModelFormatException(file.Path, p.Name, $"missing tensor (the index {System.IO.Path.GetFileName(indexPath)} maps it to this shard)");
            _byTensor[p.Name] = file;
        }
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <summary>The file holding <paramref name="name"/>; throws naming the source when absent.</summary>
    public SafeTensorsFile FileOf(string name) =>
        _byTensor.TryGetValue(name, out var f) ? f : throw new ModelFormatException(Source, name, "missing tensor");

    public SafeTensorInfo Info(string name) => FileOf(name).Info(name);
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}

public static class SafeTensorsWriter
{
    /// <summary>A tensor to write: name, dtype string, shape and its raw little-endian bytes.</summary>
    public sealed record Entry(string Name, string DType, long[] Shape, byte[] Data);

    /// <summary>Converts float32 values to an F32, F16 or BF16 entry.</summary>
    public static Entry FromFloat32(string name, long[] shape, ReadOnlySpan<float> values, string dtype = "F32")
    {
        byte[] data;
        switch (dtype)
        {
            case "F32":
                data = MemoryMarshal.AsBytes(values).ToArray();
                break;
            case "F16":
                {
                    var h = new ushort[values.Length];
                    HalfPrecision.ToF16(values, h);
                    data = MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
                    break;
                }
            case "BF16":
                {
                    var b = new ushort[values.Length];
                    HalfPrecision.ToBf16(values, b);
                    data = MemoryMarshal.AsBytes(b.AsSpan()).ToArray();
                    break;
                }
            default:
                throw new ArgumentException($"cannot convert float32 to '{dtype}'", nameof(dtype));
        }
        return new Entry(name, dtype, shape, data);
    }

    /// <summary>
    /// Writes entries in the given order with an 8-byte aligned header and __metadata__ {"format":"pt"} (plus
    /// <paramref name="metadata"/>), to a temporary file that is then renamed over <paramref name="path"/>.
    /// </summary>
    public static void Write(string path, IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var list = entries.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__");
            w.WriteString("format", "pt");
            foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
                if (k != "format") w.WriteString(k, v);
            w.WriteEndObject();
            long offset = 0;
            foreach (var e in list)
            {
                if (e.Name == "__metadata__" || !names.Add(e.Name)) throw new ArgumentException($"duplicate or reserved tensor name '{e.Name}'", nameof(entries));
                int size = SafeTensorDTypes.SizeOf(e.DType) ?? throw new ArgumentException($"unknown dtype '{e.DType}'", nameof(entries));
                long numel = e.Shape.Aggregate(1L, (a, b) => a * b);
                if (numel * size != e.Data.Length)
                    throw new ArgumentException($"tensor '{e.Name}': {e.Data.Length} bytes for shape [{string.Join(", ", e.Shape)}] of {e.DType}", nameof(entries));
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", e.DType);
                w.WriteStartArray("shape");
                foreach (long d in e.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + e.Data.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += e.Data.Length;
            }
            w.WriteEndObject();
        }
        byte[] json = ms.ToArray();
        int padded = (json.Length + 7) / 8 * 8;

        string tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                fs.Write(BitConverter.GetBytes((ulong)padded));
                fs.Write(json);
                for (int i = json.Length; i < padded; i++) fs.WriteByte((byte)' ');
                foreach (var e in list) fs.Write(e.Data);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>The UTF-8 header text of a safetensors file (for diagnostics).</summary>
    public static string ReadHeaderText(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> len = stackalloc byte[8];
        fs.ReadExactly(len);
        ulong n = BitConverter.ToUInt64(len);
        if (n > SafeTensorsFile.MaxHeaderBytes || (long)n > fs.Length - 8)
            throw new ModelFormatException(path, "header length", $"{n} bytes is not a valid header length for this {fs.Length}-byte file");
        var bytes = new byte[n];
        fs.ReadExactly(bytes);
        return Encoding.UTF8.GetString(bytes);
    }
}
