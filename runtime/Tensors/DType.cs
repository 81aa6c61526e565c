// Element types a device tensor can hold.
namespace VkPeft.Runtime.Tensors;

public enum DType { F32, F16, BF16, U8, I32, U32 }

public static class DTypeInfo
{
    public static int Size(this DType t) => t switch
    {
        DType.F32 or DType.I32 or DType.U32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.U8 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static DType Of<T>() where T : unmanaged => typeof(T) switch
    {
        var t when t == typeof(float) => DType.F32,
        var t when t == typeof(Half) => DType.F16,
        var t when t == typeof(byte) => DType.U8,
        var t when t == typeof(int) => DType.I32,
        var t when t == typeof(uint) => DType.U32,
        var t when t == typeof(ushort) => DType.BF16,
        _ => throw new ArgumentException($"no device dtype for {typeof(T).Name}"),
    };
}
