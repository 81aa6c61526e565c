// Loads the SPIR-V variants embedded in this assembly at build time (see shaders/shaders.list).
namespace VkPeft.Runtime.Kernels;

/// <summary>Catalog entry of one compiled shader variant: its typed key and its -D defines, parsed.</summary>
public sealed record ShaderInfo(ShaderId Id, string Name, string Source, string Defines, string Sha256, ShaderKey Key)
{
    /// <summary>NAME → VALUE of each -DNAME[=VALUE] ("" when the define has no value).</summary>
    public IReadOnlyDictionary<string, string> DefineValues { get; } = Defines.Split(' ', StringSplitOptions.RemoveEmptyEntries)
        .Select(d => d[2..].Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : "");

    public bool Has(string define) => DefineValues.ContainsKey(define);

    /// <summary>An unsigned define such as -DRB=2u, as the number the shader sees.</summary>
    public uint DefineUInt(string name) =>
        DefineValues.TryGetValue(name, out var v) && uint.TryParse(v.TrimEnd('u', 'U'), out var n) ? n
            : throw new InvalidOperationException($"shader '{Name}' has no unsigned define {name} (defines: {Defines})");
}

public static partial class ShaderCatalog
{
    private static readonly Dictionary<ShaderId, byte[]> Cache = [];

    // Lazy: All lives in the generated part of this class, whose static initializers may run after ours.
    private static readonly Lazy<Dictionary<ShaderKey, ShaderId>> ByKey = new(() => All.ToDictionary(s => s.Key, s => s.Id));

    public static ShaderInfo Info(ShaderId id) => All[(int)id];

    /// <summary>The variant with this key (a family, and for product lines of shaders.list one value per axis).</summary>
    public static ShaderId Find(ShaderKey key) => ByKey.Value.TryGetValue(key, out var id) ? id
        : throw new ArgumentException($"no shader variant {key} in shaders/shaders.list");

    public static bool TryFind(ShaderKey key, out ShaderId id) => ByKey.Value.TryGetValue(key, out id);

    /// <summary>The SPIR-V words of a variant, as bytes.</summary>
    public static byte[] LoadSpirv(ShaderId id)
    {
        lock (Cache)
        {
            if (Cache.TryGetValue(id, out var bytes)) return bytes;
            var name = "vkpeft.spirv." + Info(id).Name + ".spv";
            using var stream = typeof(ShaderCatalog).Assembly.GetManifestResourceStream(name)
                ?? throw new InvalidOperationException($"shader '{name}' is not embedded in the runtime assembly; rebuild");
            bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            Cache[id] = bytes;
            return bytes;
        }
    }
}
