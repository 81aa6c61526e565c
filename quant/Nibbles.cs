// Packing of 4-bit codes into bytes in the bitsandbytes order, shared by the NF4/FP4 and INT4-group formats.
// GGUF blocks use a different order and pack themselves (see GgufBlockCodec).
namespace VkPeft.Quant;

/// <summary>
/// bitsandbytes nibble order: byte <c>k</c> holds element <c>2k</c> in the HIGH nibble (bits 4..7) and element
/// <c>2k+1</c> in the LOW nibble (bits 0..3); an odd element count leaves the last low nibble 0.
/// Read as little-endian uint32 words on the GPU, element <c>e</c> lies in word <c>e &gt;&gt; 3</c> at bit shift
/// <c>8*((e &gt;&gt; 1) &amp; 3) + ((e &amp; 1) == 0 ? 4 : 0)</c>.
/// </summary>
public static class Nibbles
{
    /// <summary>Bytes needed to hold <paramref name="count"/> 4-bit codes: <c>(count + 1) / 2</c>.</summary>
    public static int PackedLength(long count) => checked((int)((count + 1) / 2));

    /// <summary>Code of element <paramref name="index"/> in a packed buffer.</summary>
    public static int Get(ReadOnlySpan<byte> packed, long index)
    {
        byte b = packed[(int)(index >> 1)];
        return (index & 1) == 0 ? b >> 4 : b & 0xF;
    }

    /// <summary>Stores code <paramref name="code"/> (0..15) of element <paramref name="index"/>, keeping the other nibble.</summary>
    public static void Set(Span<byte> packed, long index, int code)
    {
        ref byte b = ref packed[(int)(index >> 1)];
        b = (index & 1) == 0
            ? (byte)((b & 0x0F) | (code << 4))
            : (byte)((b & 0xF0) | code);
    }
}
