// Host↔device copies: a plain memcpy when device memory is host-mapped (lavapipe, integrated GPUs), else through
// host-visible staging memory: small transfers through one reusable staging ring per device (an upload is recorded in
// the command stream without any host wait; the ring waits only when it wraps onto bytes the GPU may still read),
// large ones through a staging buffer of their own, in chunks.
using System.Runtime.CompilerServices;
using Silk.NET.Vulkan;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Tensors;

public static unsafe class Transfers
{
    /// <summary>The largest staging buffer a copy uses (it copies in chunks of this size); the memory model charges it.</summary>
    public const ulong StagingBytes = 32UL << 20;

    /// <summary>Bytes of the staging ring (allocated on a device's first staged transfer); the memory model charges it.</summary>
    public const ulong RingBytes = 1UL << 20;

    /// <summary>Transfers up to this size go through the ring; larger ones get a staging buffer of their own.</summary>
    public const ulong RingTransferBytes = RingBytes / 4;

    private static readonly ConditionalWeakTable<VulkanContext, StagingRing> Rings = new();

    /// <summary>Host waits the ring of <paramref name="ctx"/> made when wrapping (0 before its first use).</summary>
    public static long RingWaits(VulkanContext ctx) => Rings.TryGetValue(ctx, out var r) ? r.Waits : 0;

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
        if (Ring(ctx, (ulong)src.Length) is { } ring)
        {
            // Recorded in order with the work around it: the recorder's barriers order it after earlier uses of dst
            // and before later ones, and the host write is visible to the copy once the batch is submitted.
            var slot = ring.Reserve((ulong)src.Length);
            src.CopyTo(new Span<byte>((void*)slot.Mapped, src.Length));
            ctx.Commands.Copy(slot, dst, (ulong)src.Length);
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
        if (Ring(ctx, (ulong)dst.Length) is { } ring)
        {
            var slot = ring.Reserve((ulong)dst.Length);
            ctx.Commands.Copy(src, slot, (ulong)dst.Length);
            ctx.Commands.Sync();
            new ReadOnlySpan<byte>((void*)slot.Mapped, dst.Length).CopyTo(dst);
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

    /// <summary>The ring of <paramref name="ctx"/> when a transfer of <paramref name="bytes"/> should use it, else null.</summary>
    private static StagingRing? Ring(VulkanContext ctx, ulong bytes)
    {
        if (bytes > RingTransferBytes || !ctx.Options.StagingRing) return null;
        lock (Rings)
        {
            if (Rings.TryGetValue(ctx, out var ring) && !ring.IsDisposed) return ring;
            ring = new StagingRing(ctx);
            ctx.Register(ring);
            Rings.AddOrUpdate(ctx, ring);
            return ring;
        }
    }

    /// <summary>
    /// A staging buffer handed out front to back in 4-byte-aligned slots. A slot is free again once the work that used
    /// it has completed; the ring tracks that per lap: wrapping to the start waits for the GPU only when slots of the
    /// current lap are still in flight (every <see cref="VulkanContext.Sync"/> completes them all).
    /// </summary>
    private sealed class StagingRing(VulkanContext ctx) : IDisposable
    {
        private readonly StagingBuffer _buffer = new(ctx, RingBytes);
        private ulong _head;
        private int _inFlight;

        public long Waits { get; private set; }
        public bool IsDisposed { get; private set; }

        public BufferRange Reserve(ulong bytes)
        {
            bytes = DeviceArena.AlignUp(bytes, 4);
            if (_head + bytes > _buffer.Size)
            {
                if (_inFlight > 0)
                {
                    ctx.Commands.Sync();
                    Waits++;
                }
                _head = 0;
            }
            var slot = _buffer.Range.Slice(_head, bytes);
            _head += bytes;
            _inFlight++;
            ctx.Commands.WhenComplete(() => _inFlight--);
            return slot;
        }

        public void Dispose()
        {
            if (IsDisposed) return;
            IsDisposed = true;
            _buffer.Dispose();
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
