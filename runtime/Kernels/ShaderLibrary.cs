// Loads the SPIR-V variants embedded in this assembly at build time (see shaders/shaders.list).
namespace VkPeft.Runtime.Kernels;

/// <summary>Catalog entry of one compiled shader variant.</summary>
public sealed record ShaderInfo(ShaderId Id, string Name, string Source, string Defines, string Sha256);

public static partial class ShaderCatalog
{
    private static readonly Dictionary<ShaderId, byte[]> Cache = [];

    public static ShaderInfo Info(ShaderId id) => All[(int)id];

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
