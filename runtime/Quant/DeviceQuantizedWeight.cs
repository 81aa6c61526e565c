// A frozen linear weight [out, in] held on the device exactly as its quantized form (quant/): packed 4-bit codes (or GGUF
// blocks) plus fp32 absmax, double-quantized absmax (8-bit codes + nested fp32 + offset) or INT4 group scales and mins.
// No full-precision copy exists on the device; shaders decode it tile by tile.
using System.Runtime.CompilerServices;
using VkPeft.Quant;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Quant;

/// <summary>
/// Device layout (all buffers little-endian, each padded with zeros to a multiple of 4 bytes; byte-identical to the
/// bitsandbytes / GGUF serialization so it can be written back exactly):
/// <list type="bullet">
/// <item><see cref="Codes"/>: NF4/FP4/INT4 packed codes, <c>(n+1)/2</c> bytes, element 2k in the high nibble of byte k;
/// GGUF: the tensor's blocks.</item>
/// <item><see cref="Scale"/>: NF4/FP4 fp32 absmax <c>[ceil(n/block)]</c>; with double quantization the 8-bit absmax codes
/// <c>[ceil(n/block)]</c> (u8); INT4 fp32 scales <c>[out·ceil(in/g)]</c>; GGUF: unused.</item>
/// <item><see cref="Aux"/>: double quantization's fp32 nested absmax <c>[ceil(nblk/256)]</c>; INT4 fp32 mins; else unused.</item>
/// <item>The DQ offset travels as a push constant; the 256-entry dynamic map is shared by every weight of a context.</item>
/// </list>
/// </summary>
public sealed class DeviceQuantizedWeight : DisposableObject
{
    private static readonly ConditionalWeakTable<VulkanContext, DeviceTensor> Maps = new();

    private DeviceQuantizedWeight(VulkanContext ctx, string name, QuantizedLinearWeight source)
    {
        Context = ctx;
        Name = name;
        Format = source.Format;
        GgmlType = source.GgmlType;
        OutFeatures = source.OutFeatures;
        InFeatures = source.InFeatures;
        Blocksize = source.Blocksize;
        DoubleQuant = source.QuantizedAbsmax != null;
        DqOffset = source.QuantizedAbsmax?.Offset ?? 0f;
        using var scope = new TensorScope();   // a failed upload frees the buffers made before it
        Codes = scope.Add(Upload(ctx, name + ".codes", source.Data));
        if (source.QuantizedAbsmax is { } dq)
        {
            Scale = scope.Add(Upload(ctx, name + ".absmax_codes", dq.Codes));
            Aux = scope.Add(UploadFloats(ctx, name + ".nested_absmax", dq.NestedAbsmax));
        }
        else if (source.Absmax is { } absmax) Scale = scope.Add(UploadFloats(ctx, name + ".absmax", absmax));
        else if (source.GroupScales is { } scales)
        {
            Scale = scope.Add(UploadFloats(ctx, name + ".scales", scales));
            Aux = scope.Add(UploadFloats(ctx, name + ".mins", source.GroupMins!));
        }
        ctx.Register(this);
        scope.Keep();   // this weight owns them now
    }

    /// <summary>Wraps buffers already on the device (the device quantizer's output).</summary>
    internal DeviceQuantizedWeight(VulkanContext ctx, string name, WeightFormat format, int outFeatures, int inFeatures, int blocksize,
        DeviceTensor codes, DeviceTensor scale, DeviceTensor? aux, float dqOffset)
    {
        Context = ctx;
        Name = name;
        Format = format;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Blocksize = blocksize;
        DoubleQuant = aux != null;
        DqOffset = dqOffset;
        Codes = codes;
        Scale = scale;
        Aux = aux;
        ctx.Register(this);
    }

    public VulkanContext Context { get; }
    public string Name { get; }
    public WeightFormat Format { get; }
    public GgmlType? GgmlType { get; }
    public int OutFeatures { get; }
    public int InFeatures { get; }
    public int Blocksize { get; }
    public bool DoubleQuant { get; }
    public float DqOffset { get; }
    public DeviceTensor Codes { get; }
    public DeviceTensor? Scale { get; }
    public DeviceTensor? Aux { get; }
    public long Count => (long)OutFeatures * InFeatures;

    /// <summary>Device bytes of this weight's own buffers (codes, scales, nested scales) plus the 4-byte DQ offset.</summary>
    public long DeviceBytes => Codes.Bytes + (Scale?.Bytes ?? 0) + (Aux?.Bytes ?? 0) + (DoubleQuant ? 4 : 0);

    public double BitsPerParam => 8.0 * DeviceBytes / Count;

    /// <summary>Uploads a quantized weight (charged to the Weights category).</summary>
    public static DeviceQuantizedWeight Upload(VulkanContext ctx, string name, QuantizedLinearWeight source) => new(ctx, name, source);

    /// <summary>The 256-entry signed dynamic map (double quantization's second-level code), one per context.</summary>
    public static DeviceTensor DynamicMapOf(VulkanContext ctx)
    {
        lock (Maps)
        {
            if (Maps.TryGetValue(ctx, out var t) && !t.IsDisposed) return t;
            t = DeviceTensor.Create(ctx, "quant.dynamic_map", DType.F32, [256], MemoryCategory.Weights);
            t.Upload(DynamicMap.Signed);
            Maps.AddOrUpdate(ctx, t);
            return t;
        }
    }

    internal static DeviceTensor Upload(VulkanContext ctx, string name, byte[] bytes)
    {
        long padded = (bytes.LongLength + 3) / 4 * 4;
        var t = DeviceTensor.Create(ctx, name, DType.U8, [padded], MemoryCategory.Weights);
        if (t.Segments.Count != 1)
            throw new ArgumentException($"quantized weight '{name}' ({ByteSize.Format((ulong)padded)}) exceeds one device binding ({ByteSize.Format(ctx.Caps.MaxBindingBytes)})");
        var data = bytes.LongLength == padded ? bytes : Pad(bytes, padded);
        t.Upload<byte>(data);
        return t;
    }

    private static byte[] Pad(byte[] bytes, long length)
    {
        var p = new byte[length];
        bytes.CopyTo(p, 0);
        return p;
    }

    internal static DeviceTensor UploadFloats(VulkanContext ctx, string name, float[] values)
    {
        var t = DeviceTensor.Create(ctx, name, DType.F32, [values.LongLength], MemoryCategory.Weights);
        t.Upload<float>(values);
        return t;
    }

    protected override void DisposeCore()
    {
        Codes.Dispose();
        Scale?.Dispose();
        Aux?.Dispose();
    }
}
