// Minimal SPIR-V reader: how many storage-buffer bindings a compute module uses and how large its push-constant block is,
// so every dispatch can be checked against the shader itself rather than against what the C# side believes; and how many
// bytes of shared (Workgroup) memory it declares, so requirements stated in C# can be checked against the shader.
namespace VkPeft.Runtime.Kernels;

/// <summary><paramref name="WorkgroupBytes"/>: shared variables' total size (arrays sized by specialization constants count one element).</summary>
public sealed record SpirvInfo(int BindingCount, uint PushConstantSize, uint[] StorageBindings, uint WorkgroupBytes = 0);

public static class SpirvReflection
{
    private const uint Magic = 0x07230203;

    public static SpirvInfo Reflect(ReadOnlySpan<byte> spirv)
    {
        if (spirv.Length < 20 || spirv.Length % 4 != 0) throw new InvalidDataException("not a SPIR-V module (bad length)");
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(spirv);
        if (words[0] != Magic) throw new InvalidDataException("not a SPIR-V module (bad magic)");

        var bindings = new Dictionary<uint, uint>();                 // id → binding
        var memberOffsets = new Dictionary<(uint, uint), uint>();    // (struct, member) → offset
        var arrayStrides = new Dictionary<uint, uint>();
        var structs = new Dictionary<uint, uint[]>();
        var pointers = new Dictionary<uint, (uint Storage, uint Type)>();
        var scalars = new Dictionary<uint, uint>();                  // type id → byte size
        var vectors = new Dictionary<uint, (uint Comp, uint Count)>();
        var arrays = new Dictionary<uint, (uint Elem, uint LenId)>();
        var constants = new Dictionary<uint, uint>();
        var variables = new List<(uint Type, uint Id, uint Storage)>();

        for (int i = 5; i < words.Length;)
        {
            uint op = words[i] & 0xffff, n = words[i] >> 16;
            if (n == 0 || i + n > words.Length) throw new InvalidDataException("truncated SPIR-V instruction");
            var w = words.Slice(i, (int)n);
            switch (op)
            {
                case 71 when w[2] == 33: bindings[w[1]] = w[3]; break;           // OpDecorate Binding
                case 71 when w[2] == 6: arrayStrides[w[1]] = w[3]; break;        // OpDecorate ArrayStride
                case 72 when w[3] == 35: memberOffsets[(w[1], w[2])] = w[4]; break; // OpMemberDecorate Offset
                case 21: scalars[w[1]] = w[2] / 8; break;                        // OpTypeInt
                case 22: scalars[w[1]] = w[2] / 8; break;                        // OpTypeFloat
                case 23: vectors[w[1]] = (w[2], w[3]); break;                    // OpTypeVector
                case 28: arrays[w[1]] = (w[2], w[3]); break;                     // OpTypeArray
                case 30: structs[w[1]] = w[2..].ToArray(); break;                // OpTypeStruct
                case 32: pointers[w[1]] = (w[2], w[3]); break;                   // OpTypePointer
                case 43: constants[w[2]] = w[3]; break;                          // OpConstant
                case 59: variables.Add((w[1], w[2], w[3])); break;               // OpVariable
            }
            i += (int)n;
        }

        uint SizeOf(uint type)
        {
            if (scalars.TryGetValue(type, out var s)) return s;
            if (vectors.TryGetValue(type, out var v)) return SizeOf(v.Comp) * v.Count;
            if (arrays.TryGetValue(type, out var a))
            {
                uint len = constants.TryGetValue(a.LenId, out var l) ? l : 1;
                uint stride = arrayStrides.TryGetValue(type, out var st) ? st : SizeOf(a.Elem);
                return stride * len;
            }
            if (structs.TryGetValue(type, out var members))
            {
                uint end = 0;
                for (uint m = 0; m < members.Length; m++)
                {
                    uint off = memberOffsets.TryGetValue((type, m), out var o) ? o : 0;
                    end = Math.Max(end, off + SizeOf(members[m]));
                }
                return end;
            }
            return 0;
        }

        uint push = 0, workgroup = 0;
        var storage = new List<uint>();
        foreach (var (ptrType, id, storageClass) in variables)
        {
            if (storageClass == 9 && pointers.TryGetValue(ptrType, out var p)) push = Math.Max(push, SizeOf(p.Type));   // PushConstant
            if ((storageClass == 12 || storageClass == 2) && bindings.TryGetValue(id, out var b)) storage.Add(b);       // StorageBuffer / Uniform
            if (storageClass == 4 && pointers.TryGetValue(ptrType, out var wp)) workgroup += SizeOf(wp.Type);              // Workgroup
        }
        storage.Sort();
        return new SpirvInfo(storage.Count == 0 ? 0 : (int)storage.Max() + 1, push, storage.ToArray(), workgroup);
    }
}
