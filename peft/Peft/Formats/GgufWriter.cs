// GGUF v3 writer: typed metadata (the exact value types llama.cpp checks), tensor infos in ne order, tensor data
// padded to the alignment (general.alignment, default 32); written to a temporary file and renamed.
using System.Text;
using VkPeft.Quant;

namespace VkPeft.Peft.Formats;

public sealed class GgufWriter
{
    private readonly List<(string Key, GgufValueType Type, object Value)> _kv = [];
    private readonly List<(string Name, ulong[] Ne, GgmlType Type, byte[] Data)> _tensors = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    public uint Alignment { get; }

    public GgufWriter(uint alignment = GgufFile.DefaultAlignment)
    {
        if (alignment == 0 || alignment % 8 != 0) throw new ArgumentException("alignment must be a positive multiple of 8", nameof(alignment));
        Alignment = alignment;
        if (alignment != GgufFile.DefaultAlignment) AddUInt32("general.alignment", alignment);
    }

    private void Add(string key, GgufValueType type, object value)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"duplicate metadata key '{key}'", nameof(key));
        _kv.Add((key, type, value));
    }

    public void AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public void AddInt32(string key, int value) => Add(key, GgufValueType.Int32, value);
    public void AddFloat32(string key, float value) => Add(key, GgufValueType.Float32, value);
    public void AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public void AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public void AddArray(string key, string[] values) => Add(key, GgufValueType.Array, new GgufArray(GgufValueType.String, values));
    public void AddArray(string key, float[] values) => Add(key, GgufValueType.Array, new GgufArray(GgufValueType.Float32, values));
    public void AddArray(string key, int[] values) => Add(key, GgufValueType.Array, new GgufArray(GgufValueType.Int32, values));

    /// <summary>Adds a tensor; <paramref name="ne"/> is in ggml order (a PyTorch [out, in] matrix is ne [in, out]).</summary>
    public void AddTensor(string name, ulong[] ne, GgmlType type, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(ne);
        ArgumentNullException.ThrowIfNull(data);
        if (Encoding.UTF8.GetByteCount(name) > 64) throw new ArgumentException($"tensor name '{name}' is longer than 64 bytes", nameof(name));
        if (!_names.Add(name)) throw new ArgumentException($"duplicate tensor '{name}'", nameof(name));
        if (ne.Length is 0 or > 4) throw new ArgumentException($"tensor '{name}': {ne.Length} dims (1..4 allowed)", nameof(ne));
        var (bs, _) = GgufBlockCodec.Geometry(type) ?? throw new ArgumentException($"unknown ggml type {type}", nameof(type));
        if (ne[0] % (ulong)bs != 0) throw new ArgumentException($"tensor '{name}': ne[0] = {ne[0]} is not a multiple of the {type} block size {bs}", nameof(ne));
        long count = ne.Aggregate(1L, (a, b) => checked(a * (long)b));
        long bytes = GgufBlockCodec.ByteCount(type, count);
        if (bytes != data.LongLength) throw new ArgumentException($"tensor '{name}': {data.LongLength} bytes, {type} ne [{string.Join(", ", ne)}] needs {bytes}", nameof(data));
        _tensors.Add((name, ne, type, data));
    }

    /// <summary>Writes the file atomically (temporary file, then rename over <paramref name="path"/>).</summary>
    public void Write(string path)
    {
        string tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            using (var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true))
            {
                w.Write(GgufFile.Magic);
                w.Write(3u);
                w.Write((ulong)_tensors.Count);
                w.Write((ulong)_kv.Count);
                foreach (var (key, type, value) in _kv)
                {
                    WriteString(w, key);
                    w.Write((uint)type);
                    WriteValue(w, type, value);
                }
                long offset = 0;
                foreach (var (name, ne, type, data) in _tensors)
                {
                    WriteString(w, name);
                    w.Write((uint)ne.Length);
                    foreach (ulong d in ne) w.Write(d);
                    w.Write((uint)type);
                    w.Write((ulong)offset);
                    offset = GgufFile.Align(offset + data.LongLength, Alignment);
                }
                w.Flush();
                Pad(fs);
                foreach (var (_, _, _, data) in _tensors)
                {
                    fs.Write(data);
                    Pad(fs);
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private void Pad(FileStream fs)
    {
        long pad = GgufFile.Align(fs.Position, Alignment) - fs.Position;
        for (long i = 0; i < pad; i++) fs.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] b = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)b.Length);
        w.Write(b);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.Array:
                {
                    var a = (GgufArray)value;
                    w.Write((uint)a.ElementType);
                    w.Write((ulong)a.Count);
                    foreach (var item in a.Values) WriteValue(w, a.ElementType, item!);
                    break;
                }
            default: throw new NotSupportedException($"GGUF value type {type} is not written here");
        }
    }
}
