// A buffer range bound to one shader binding, with how the shader uses it (for barrier placement).
using VkPeft.Runtime.Memory;

namespace VkPeft.Runtime.Commands;

[Flags]
public enum Access { Read = 1, Write = 2, ReadWrite = Read | Write }

public readonly record struct Binding(BufferRange Range, Access Access)
{
    public static Binding Read(BufferRange r) => new(r, Access.Read);
    public static Binding Write(BufferRange r) => new(r, Access.Write);
    public static Binding ReadWrite(BufferRange r) => new(r, Access.ReadWrite);
}
