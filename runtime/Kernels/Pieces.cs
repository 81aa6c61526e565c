// Splits a dispatch over tensors stored in several segments into pieces where every operand lies in one binding.
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// Units [Start, Start+Count) and, per operand, a bindable range (its offset aligned for the device) and the element
/// offset inside that range where the piece's first unit lies. Kernels take these offsets as push constants.
/// </summary>
public readonly record struct Piece(long Start, long Count, BufferRange[] Ranges, uint[] Offsets);

public static class Pieces
{
    /// <summary>
    /// Cuts [0, units) so that each piece lies inside one segment of every operand. Operand i holds
    /// <paramref name="elementsPerUnit"/>[i] elements per unit (1 for elementwise ops, the row length for row ops).
    /// </summary>
    public static List<Piece> Split(long units, DeviceTensor[] operands, long[] elementsPerUnit)
    {
        var cuts = new SortedSet<long> { 0, units };
        for (int i = 0; i < operands.Length; i++)
        {
            var t = operands[i];
            if (t.Count != units * elementsPerUnit[i])
                throw new ArgumentException($"operand '{t.Name}' {t.ShapeString} has {t.Count} elements, expected {units * elementsPerUnit[i]}");
            foreach (var s in t.Segments)
            {
                long startElem = s.FirstRow * t.RowElements;
                if (startElem % elementsPerUnit[i] != 0)
                    throw new ArgumentException($"operand '{t.Name}': a segment boundary falls inside a unit of {elementsPerUnit[i]} elements");
                if (startElem / elementsPerUnit[i] < units) cuts.Add(startElem / elementsPerUnit[i]);
            }
        }
        var pieces = new List<Piece>();
        var list = cuts.ToArray();
        for (int p = 0; p + 1 < list.Length; p++)
        {
            long a = list[p], b = list[p + 1];
            if (b <= a) continue;
            var ranges = new BufferRange[operands.Length];
            var offsets = new uint[operands.Length];
            for (int i = 0; i < operands.Length; i++)
                (ranges[i], offsets[i]) = RangeOf(operands[i], a * elementsPerUnit[i], (b - a) * elementsPerUnit[i]);
            pieces.Add(new Piece(a, b - a, ranges, offsets));
        }
        return pieces;
    }

    /// <summary>
    /// A bindable range holding elements [start, start+count) of a tensor (they must lie in one segment), starting at
    /// the closest device-aligned offset at or before them, and the element offset of <paramref name="start"/> in it.
    /// </summary>
    public static (BufferRange Range, uint ElementOffset) RangeOf(DeviceTensor t, long start, long count)
    {
        int size = t.DType.Size();
        ulong align = t.Context.Caps.MinStorageBufferOffsetAlignment;
        foreach (var s in t.Segments)
        {
            long s0 = s.FirstRow * t.RowElements, s1 = s0 + s.Rows * t.RowElements;
            if (start >= s0 && start + count <= s1)
            {
                ulong byteStart = (ulong)((start - s0) * size);
                ulong absolute = s.Range.Offset + byteStart;
                ulong shift = absolute % align;
                if (shift % (ulong)size != 0)
                    throw new ArgumentException($"'{t.Name}': elements cannot be addressed from an aligned binding");
                // The binding may start before a view's first byte (inside the same buffer): the kernel skips `shift`
                // elements and touches only its own; the hazard tracker sees the wider range, which is conservative.
                var range = shift <= byteStart
                    ? s.Range.Slice(byteStart - shift, shift + (ulong)(count * size))
                    : new BufferRange(s.Range.Buffer, absolute - shift, shift + (ulong)(count * size),
                        s.Range.Mapped == 0 ? 0 : s.Range.Mapped + (nint)byteStart - (nint)shift);
                return (range, (uint)(shift / (ulong)size));
            }
        }
        throw new ArgumentException($"elements [{start}, {start + count}) of '{t.Name}' span several segments");
    }

    /// <summary>A 2-D workgroup grid for <paramref name="groups"/> groups within the device's per-dimension limit.</summary>
    public static (uint X, uint Y) Grid(long groups, uint maxX)
    {
        if (groups <= maxX) return ((uint)Math.Max(groups, 1), 1);
        uint y = (uint)((groups + maxX - 1) / maxX);
        uint x = (uint)((groups + y - 1) / y);
        return (x, y);
    }
}
