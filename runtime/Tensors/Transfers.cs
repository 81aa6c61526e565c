// Host↔device copies: a plain memcpy when device memory is host-mapped (lavapipe, integrated GPUs), else through a
// host-visible staging buffer in chunks.
using Silk.NET.Vulkan;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Tensors;

public static unsafe class Transfers
{
    /// <summary>The largest staging buffer a copy uses (it copies in chunks of this size); the memory model charges it.</summary>
    public const ulong StagingBytes = 32UL << 20;

    public static void Upload(VulkanContext ctx, BufferRange dst, ReadOnlySpan<byte> src)
    {
        if (src.Length == 0) return;
        if (dst.Mapped != 0)
        {
            // The GPU may still read or write this memory: finish recorded work first.
            if (ctx.Commands.HasWorkInFlight) ctx.Commands.Sync();
            src.CopyTo(new Span<byte>((void*)dst.Mapped, src.Length));
            return;
        }
        using var staging = new StagingBuffer(ctx, (ulong)Math.Min((ulong)src.Length, StagingBytes));
        for (ulong off = 0; off < (ulong)src.Length; off += staging.Size)
        {
            ulong n = Math.Min(staging.Size, (ulong)src.Length - off);
            if (ctx.Commands.HasWorkInFlight) ctx.Commands.Sync();
            src.Slice((int)off, (int)n).CopyTo(new Span<byte>((void*)staging.Mapped, (int)n));
            ctx.Commands.Copy(staging.Range, dst.Slice(off, n), n);
            ctx.Commands.Sync();
        }
    }

    public static void Download(VulkanContext ctx, BufferRange src, Span<byte> dst)
    {
        if (dst.Length == 0) return;
        if (src.Mapped != 0)
        {
            ctx.Commands.Sync();
            new ReadOnlySpan<byte>((void*)src.Mapped, dst.Length).CopyTo(dst);
            return;
        }
        using var staging = new StagingBuffer(ctx, (ulong)Math.Min((ulong)dst.Length, StagingBytes));
        for (ulong off = 0; off < (ulong)dst.Length; off += staging.Size)
        {
            ulong n = Math.Min(staging.Size, (ulong)dst.Length - off);
            ctx.Commands.Copy(src.Slice(off, n), staging.Range, n);
            ctx.Commands.Sync();
            new ReadOnlySpan<byte>((void*)staging.Mapped, (int)n).CopyTo(dst.Slice((int)off, (int)n));
        }
    }

    /// <summary>A host-visible, coherent, mapped buffer (charged to the Staging category).</summary>
    private sealed class StagingBuffer : IDisposable
    {
        private readonly VulkanContext _ctx;
        private readonly Silk.NET.Vulkan.Buffer _buffer;
        private readonly DeviceMemory _memory;

        public StagingBuffer(VulkanContext ctx, ulong size)
        {
            _ctx = ctx;
            Size = DeviceArena.AlignUp(size, 4);
            var vk = ctx.Vk;
            _buffer = ctx.CreateRawBuffer(Size, BufferUsageFlags.TransferSrcBit | BufferUsageFlags.TransferDstBit, "creating a staging buffer");
            MemoryRequirements req;
            vk.GetBufferMemoryRequirements(ctx.Device, _buffer, &req);
            int type = ctx.FindMemoryType(req.MemoryTypeBits, MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit | MemoryPropertyFlags.HostCachedBit);
            if (type < 0) type = ctx.FindMemoryType(req.MemoryTypeBits, MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit);
            var alloc = new MemoryAllocateInfo { SType = StructureType.MemoryAllocateInfo, AllocationSize = req.Size, MemoryTypeIndex = (uint)type };
            DeviceMemory mem;
            VkCheck.Ok(vk.AllocateMemory(ctx.Device, &alloc, null, &mem), "allocating staging memory");
            _memory = mem;
            VkCheck.Ok(vk.BindBufferMemory(ctx.Device, _buffer, mem, 0), "binding staging memory");
            void* p;
            VkCheck.Ok(vk.MapMemory(ctx.Device, mem, 0, Vk.WholeSize, 0, &p), "mapping staging memory");
            Mapped = (nint)p;
            ctx.Arena.Accounting.Charge(MemoryCategory.Staging, (long)Size);
        }

        public ulong Size { get; }
        public nint Mapped { get; }
        public BufferRange Range => new(_buffer, 0, Size, Mapped);

        public void Dispose()
        {
            _ctx.Commands.WaitIdleIfUsing(_buffer);
            _ctx.Vk.UnmapMemory(_ctx.Device, _memory);
            _ctx.Vk.DestroyBuffer(_ctx.Device, _buffer, null);
            _ctx.Vk.FreeMemory(_ctx.Device, _memory, null);
            _ctx.Arena.Accounting.Charge(MemoryCategory.Staging, -(long)Size);
        }
    }
}
