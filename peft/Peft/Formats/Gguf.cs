// GGUF v2/v3 reader: header, typed metadata (arrays included), tensor infos, alignment and strict data tiling, every
// declared count and length checked against the bytes that exist before anything is allocated; tensor data decoded to
// float32 by the quant codec (GgufBlockCodec: F32/F16/BF16/Q8_0/Q4_0/Q4_1).
using System.Text;
using VkPeft.Quant;

namespace VkPeft.Peft.Formats;

public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
    String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>A metadata array: element type and a typed CLR array (string[], float[], int[], GgufArray[] ...).</summary>
public sealed record GgufArray(GgufValueType ElementType, Array Values)
{
    public int Count => Values.Length;
}

/// <summary>A tensor info; Ne is in ggml order (ne[0] = row length), so a PyTorch [out, in] matrix has Ne = [in, out].</summary>
public sealed record GgufTensorInfo(string Name, ulong[] Ne, GgmlType Type, ulong Offset)
{
    public long ElementCount => Ne.Aggregate(1L, (a, b) => checked(a * (long)b));

    /// <summary>PyTorch-order shape (reversed Ne).</summary>
    public long[] Shape => Ne.Reverse().Select(d => (long)d).ToArray();

    public long ByteSize => GgufBlockCodec.ByteCount(Type, ElementCount);
}

public sealed class GgufFile
{
    public const uint Magic = 0x46554747; // "GGUF"
    public const uint DefaultAlignment = 32;

    private readonly Dictionary<string, GgufTensorInfo> _tensorsByName;

    private GgufFile(string path, uint version, Dictionary<string, object> metadata, List<GgufTensorInfo> tensors,
        uint alignment, long dataOffset)
    {
        Path = path;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        Alignment = alignment;
        DataOffset = dataOffset;
        _tensorsByName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path { get; }
    public uint Version { get; }

    /// <summary>Values are byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double or <see cref="GgufArray"/>.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    public uint Alignment { get; }

    /// <summary>File offset of the data section.</summary>
    public long DataOffset { get; }

    /// <summary>Reads and validates header, metadata and tensor infos (tensor data stays on disk).</summary>
    public static GgufFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"GGUF file not found: {path}", path);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var r = new Reader(path, fs);
        uint magic = r.U32("magic");
        if (magic != Magic)
            throw new ModelFormatException(path, "magic", $"expected 'GGUF' (0x{Magic:X8}), found 0x{magic:X8}");
        uint version = r.U32("version");
        if (version is not (2 or 3))
            throw new ModelFormatException(path, "version", $"GGUF version {version} is not supported (2 and 3 are)");
        ulong tensorCount = r.U64("tensor_count");
        ulong kvCount = r.U64("metadata_kv_count");
        if (tensorCount > (ulong)(fs.Length / 24)) throw new ModelFormatException(path, "tensor_count", $"truncated or corrupt: {tensorCount} tensors cannot fit in a {fs.Length}-byte file");
        if (kvCount > (ulong)(fs.Length / 13)) throw new ModelFormatException(path, "metadata_kv_count", $"truncated or corrupt: {kvCount} metadata entries cannot fit in a {fs.Length}-byte file");

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.Str($"metadata[{i}].key");
            var type = (GgufValueType)r.U32(key + ".type");
            object value = r.Value(key, type, depth: 0);
            if (!metadata.TryAdd(key, value)) throw new ModelFormatException(path, key, "duplicate metadata key");
        }

        uint alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out var al))
        {
            if (al is not uint a || a == 0 || a % 8 != 0)
                throw new ModelFormatException(path, "general.alignment", $"must be a u32 multiple of 8, got {al}");
            alignment = a;
        }

        var tensors = new List<GgufTensorInfo>((int)tensorCount);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.Str($"tensor_info[{i}].name");
            if (!names.Add(name)) throw new ModelFormatException(path, name, "duplicate tensor name");
            uint nDims = r.U32(name + ".n_dims");
            if (nDims is 0 or > 4) throw new ModelFormatException(path, name, $"n_dims {nDims} outside 1..4");
            var ne = new ulong[nDims];
            for (int d = 0; d < nDims; d++) ne[d] = r.U64($"{name}.ne[{d}]");
            uint typeId = r.U32(name + ".type");
            ulong offset = r.U64(name + ".offset");
            var type = (GgmlType)typeId;
            var block = GgufBlockCodec.Geometry(type)
                ?? throw new ModelFormatException(path, name, $"unsupported tensor dtype: ggml type id {typeId}");
            if (ne.Any(d => d == 0 || d > int.MaxValue)) throw new ModelFormatException(path, name, $"dims [{string.Join(", ", ne)}] out of range");
            // The element count and byte size must fit what the file can hold before anything relies on them.
            System.Numerics.BigInteger elements = ne.Aggregate(System.Numerics.BigInteger.One, (acc, d) => acc * d);
            if (elements / block.BlockSize * block.BlockBytes > fs.Length)
                throw new ModelFormatException(path, name, $"dims [{string.Join(", ", ne)}] of {type} need more bytes than the {fs.Length}-byte file holds");
            if (ne[0] % (ulong)block.BlockSize != 0)
                throw new ModelFormatException(path, name, $"ne[0] = {ne[0]} is not a multiple of the {type} block size {block.BlockSize}");
            tensors.Add(new GgufTensorInfo(name, ne, type, offset));
        }

        long dataOffset = Align(fs.Position, alignment);
        long dataLength = fs.Length - dataOffset;
        long expected = 0;
        foreach (var t in tensors)
        {
            if (t.Offset % alignment != 0)
                throw new ModelFormatException(path, t.Name, $"offset {t.Offset} is not a multiple of the alignment {alignment}");
            if ((long)t.Offset != expected)
                throw new ModelFormatException(path, t.Name,
                    $"tensor offsets do not tile the data section: offset {t.Offset}, expected {expected} after the previous tensor");
            long end = expected + t.ByteSize;
            if (end > dataLength)
                throw new ModelFormatException(path, t.Name,
                    $"truncated: tensor data ends at {dataOffset + end} but the file is {fs.Length} bytes");
            expected = Align(end, alignment);
        }
        return new GgufFile(path, version, metadata, tensors, alignment, dataOffset);
    }

    public static long Align(long offset, long alignment) => offset + (alignment - offset % alignment) % alignment;

    public bool HasTensor(string name) => _tensorsByName.ContainsKey(name);

    public GgufTensorInfo Tensor(string name) =>
        _tensorsByName.TryGetValue(name, out var t) ? t : throw new ModelFormatException(Path, name, "missing tensor");

    public byte[] ReadTensorBytes(string name)
    {
        var t = Tensor(name);
        if (t.ByteSize > Array.MaxLength) throw new ModelFormatException(Path, name, $"{t.ByteSize} bytes is too large for one array");
        var bytes = new byte[t.ByteSize];
        using var handle = File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
        int read = 0;
        while (read < bytes.Length)
        {
            int n = RandomAccess.Read(handle, bytes.AsSpan(read), DataOffset + (long)t.Offset + read);
            if (n == 0) throw new ModelFormatException(Path, name, "truncated tensor data");
            read += n;
        }
        return bytes;
    }

    /// <summary>Tensor values as float32, flattened in ggml order (= PyTorch row-major for the reversed shape).</summary>
    public float[] ReadFloat32(string name)
    {
        var t = Tensor(name);
        if (!GgufBlockCodec.IsCodec(t.Type))
            throw new ModelFormatException(Path, name, $"unsupported tensor dtype {t.Type} for float conversion");
        var dst = new float[t.ElementCount];
        GgufBlockCodec.Dequantize(t.Type, ReadTensorBytes(name), dst.Length, dst);
        return dst;
    }

    // ---- typed metadata access ----

    public bool Has(string key) => Metadata.ContainsKey(key);

    // Typed like llama.cpp's loader: a key it reads as uint32 (counts, token ids), float32 (eps, RoPE base and factor),
    // string or bool must have exactly that GGUF type; llama.cpp refuses any other width, and so does this reader.

    public string GetString(string key) => Get(key) as string ?? throw WrongType(key, "string");

    public string? TryGetString(string key) => Has(key) ? GetString(key) : null;

    public uint GetUInt32(string key) => Get(key) is uint v ? v : throw WrongType(key, "u32");

    public uint? TryGetUInt32(string key) => Has(key) ? GetUInt32(key) : null;

    public float GetFloat32(string key) => Get(key) is float v ? v : throw WrongType(key, "f32");

    public float? TryGetFloat32(string key) => Has(key) ? GetFloat32(key) : null;

    public bool? TryGetBool(string key) => !Has(key) ? null : Get(key) is bool v ? v : throw WrongType(key, "bool");

    /// <summary>
    /// A per-layer uint32 as llama.cpp reads it: one u32 for every layer, or an array of exactly <paramref name="layers"/>
    /// u32, i32 or bool elements (the element types its per-layer reader accepts); null when the key is absent.
    /// </summary>
    public uint[]? TryGetUInt32PerLayer(string key, int layers)
    {
        if (!Has(key)) return null;
        switch (Get(key))
        {
            case uint v:
                return [.. Enumerable.Repeat(v, Math.Max(layers, 1))];
            case GgufArray a when a.ElementType is GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Bool:
                if (a.Count != layers)
                    throw new ModelFormatException(Path, key, $"has {a.Count} per-layer values but block_count is {layers}");
                return a.Values switch
                {
                    uint[] u => u,
                    int[] i => [.. i.Select(x => unchecked((uint)x))],
                    bool[] b => [.. b.Select(x => x ? 1u : 0u)],
                    _ => throw WrongType(key, "u32 or a per-layer array of u32"),
                };
            default:
                throw WrongType(key, "u32 or a per-layer array of u32");
        }
    }

    public T[] GetArray<T>(string key) => Get(key) is GgufArray { Values: T[] values }
        ? values
        : throw new ModelFormatException(Path, key, $"expected an array of {typeof(T).Name}, found {TypeName(Metadata[key])}");

    private ModelFormatException WrongType(string key, string expected) =>
        new(Path, key, $"has GGUF type {TypeName(Metadata[key])} but must be {expected} (the type llama.cpp's loader requires)");

    /// <summary>The GGUF type of a metadata value in llama.cpp's spelling (u32, f32, str, arr[i32] ...).</summary>
    private static string TypeName(object v) => v switch
    {
        byte => "u8", sbyte => "i8", ushort => "u16", short => "i16", uint => "u32", int => "i32", float => "f32", bool => "bool",
        string => "str", ulong => "u64", long => "i64", double => "f64",
        GgufArray a => $"arr[{a.ElementType switch
        {
            GgufValueType.UInt8 => "u8", GgufValueType.Int8 => "i8", GgufValueType.UInt16 => "u16", GgufValueType.Int16 => "i16",
            GgufValueType.UInt32 => "u32", GgufValueType.Int32 => "i32", GgufValueType.Float32 => "f32", GgufValueType.Bool => "bool",
            GgufValueType.String => "str", GgufValueType.UInt64 => "u64", GgufValueType.Int64 => "i64", GgufValueType.Float64 => "f64",
            _ => "arr",
        }}]",
        _ => v.GetType().Name,
    };

    private object Get(string key) =>
        Metadata.TryGetValue(key, out var v) ? v : throw new ModelFormatException(Path, key, "required metadata key is missing");

    /// <summary>Little-endian reader that names the field it was reading when the file ends early.</summary>
    private sealed class Reader(string path, FileStream fs) : IDisposable
    {
        private readonly BinaryReader _r = new(fs, Encoding.UTF8, leaveOpen: true);

        public void Dispose() => _r.Dispose();

        private T Read<T>(string field, Func<BinaryReader, T> read)
        {
            try
            {
                return read(_r);
            }
            catch (EndOfStreamException e)
            {
                throw new ModelFormatException(path, field, $"truncated: file ends at byte {fs.Length} while reading this field", e);
            }
        }

        public uint U32(string field) => Read(field, r => r.ReadUInt32());
        public ulong U64(string field) => Read(field, r => r.ReadUInt64());

        public string Str(string field)
        {
            ulong len = U64(field + " (string length)");
            if (len > (ulong)(fs.Length - fs.Position))
                throw new ModelFormatException(path, field, $"truncated: string of {len} bytes runs past the end of the file");
            byte[] bytes = Read(field, r => r.ReadBytes((int)len));
            if (bytes.Length != (int)len) throw new ModelFormatException(path, field, "truncated inside a string");
            JsonFields.RequireUtf8(path, field, bytes);
            return Encoding.UTF8.GetString(bytes);
        }

        public object Value(string key, GgufValueType type, int depth) => type switch
        {
            GgufValueType.UInt8 => Read(key, r => r.ReadByte()),
            GgufValueType.Int8 => Read(key, r => r.ReadSByte()),
            GgufValueType.UInt16 => Read(key, r => r.ReadUInt16()),
            GgufValueType.Int16 => Read(key, r => r.ReadInt16()),
            GgufValueType.UInt32 => Read(key, r => r.ReadUInt32()),
            GgufValueType.Int32 => Read(key, r => r.ReadInt32()),
            GgufValueType.Float32 => Read(key, r => r.ReadSingle()),
            GgufValueType.Bool => Read(key, r => r.ReadByte()) switch
            {
                0 => false,
                1 => true,
                var b => throw new ModelFormatException(path, key, $"bool must be 0 or 1, got {b}"),
            },
            GgufValueType.String => Str(key),
            GgufValueType.UInt64 => Read(key, r => r.ReadUInt64()),
            GgufValueType.Int64 => Read(key, r => r.ReadInt64()),
            GgufValueType.Float64 => Read(key, r => r.ReadDouble()),
            GgufValueType.Array when depth < 4 => ArrayValue(key, depth),
            _ => throw new ModelFormatException(path, key, $"unsupported metadata value type {(uint)type}"),
        };

        private GgufArray ArrayValue(string key, int depth)
        {
            var et = (GgufValueType)U32(key + " (array element type)");
            ulong count = U64(key + " (array length)");
            // Each element takes at least this many bytes in the file (a string its 8-byte length, an array its type and
            // length): a count the remaining bytes cannot hold is refused before the array is allocated.
            ulong minBytes = et switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
                GgufValueType.Array => 12,
                _ => 8,
            };
            if (count > (ulong)(fs.Length - fs.Position) / minBytes)
                throw new ModelFormatException(path, key, $"truncated: array of {count} elements runs past the end of the file");
            int n = (int)count;
            Array values = et switch
            {
                GgufValueType.UInt8 => new byte[n], GgufValueType.Int8 => new sbyte[n],
                GgufValueType.UInt16 => new ushort[n], GgufValueType.Int16 => new short[n],
                GgufValueType.UInt32 => new uint[n], GgufValueType.Int32 => new int[n],
                GgufValueType.Float32 => new float[n], GgufValueType.Bool => new bool[n],
                GgufValueType.String => new string[n], GgufValueType.UInt64 => new ulong[n],
                GgufValueType.Int64 => new long[n], GgufValueType.Float64 => new double[n],
                GgufValueType.Array => new GgufArray[n],
                _ => throw new ModelFormatException(path, key, $"unsupported array element type {(uint)et}"),
            };
            for (int i = 0; i < n; i++) values.SetValue(Value(key, et, depth + 1), i);
            return new GgufArray(et, values);
        }
    }
}
