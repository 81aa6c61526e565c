// Sub-allocating memory arena: a few large blocks (each one VkDeviceMemory + one VkBuffer), aligned slices handed out
// first-fit, every slice charged to a category, and a budget that refuses what would not fit. The device arena holds
// device-local memory; the host arena holds host memory the GPU reads and writes over the bus (offloaded state).
using Silk.NET.Vulkan;
using VkPeft.Runtime.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;

namespace VkPeft.Runtime.Memory;

/// <summary>A bindable byte range: the buffer, offset and size, and its host address when the memory is mapped.</summary>
public readonly record struct BufferRange(VkBuffer Buffer, ulong Offset, ulong Size, nint Mapped)
{
    public BufferRange Slice(ulong offset, ulong size)
    {
        if (offset + size > Size) throw new ArgumentOutOfRangeException(nameof(offset), $"slice [{offset}, {offset + size}) outside range of {Size} bytes");
        return new BufferRange(Buffer, Offset + offset, size, Mapped == 0 ? 0 : Mapped + (nint)offset);
    }
}

/// <summary>One slice of an arena block, owned by a tensor.</summary>
public sealed class DeviceAllocation
{
    internal DeviceAllocation(DeviceArena arena, DeviceArena.Block block, ulong offset, ulong size, ulong requested, MemoryCategory category, string name)
    {
        Arena = arena; Block = block; Offset = offset; Size = size; Requested = requested; Category = category; Name = name;
    }

    /// <summary>The arena the slice came from (and goes back to).</summary>
    public DeviceArena Arena { get; }
    internal DeviceArena.Block Block { get; }
    public ulong Offset { get; }
    /// <summary>Bytes reserved (aligned).</summary>
    public ulong Size { get; }
    /// <summary>Bytes asked for (what is charged to the category).</summary>
    public ulong Requested { get; }
    public MemoryCategory Category { get; }
    public string Name { get; }
    internal bool Freed { get; set; }

    public BufferRange Range => new(Block.Buffer, Offset, Requested, Block.Mapped == 0 ? 0 : Block.Mapped + (nint)Offset);
}

public sealed unsafe class DeviceArena : DisposableObject
{
    private readonly VulkanContext _ctx;
    private readonly List<Block> _blocks = [];
    private readonly object _lock = new();
    private readonly int _memoryType;

    internal DeviceArena(VulkanContext ctx, MemoryPlace place = MemoryPlace.Device)
    {
        _ctx = ctx;
        Place = place;
        var caps = ctx.Caps;
        Alignment = Math.Max(caps.MinStorageBufferOffsetAlignment, 64UL);
        BlockSize = Math.Min(ctx.Options.ArenaBlockSize ?? 256UL << 20, caps.MaxMemoryAllocationSize);
        BlockSize -= BlockSize % Alignment;
        Budget = place == MemoryPlace.Host ? ctx.Options.HostMemoryBudget ?? ulong.MaxValue : ctx.Options.MemoryBudget ?? caps.DeviceLocalBytes;

        var probe = ctx.CreateRawBuffer(Alignment, Usage, "probing buffer memory types");
        MemoryRequirements req;
        ctx.Vk.GetBufferMemoryRequirements(ctx.Device, probe, &req);
        ctx.Vk.DestroyBuffer(ctx.Device, probe, null);
        const MemoryPropertyFlags hostFlags = MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit;
        const MemoryPropertyFlags mapped = MemoryPropertyFlags.DeviceLocalBit | hostFlags;
        if (place == MemoryPlace.Host)
        {
            // System memory: host-visible and, where the device has such a type, not device-local (a discrete GPU's
            // host-visible device-local window is VRAM, which is what offloading is meant to spare); cached if possible.
            _memoryType = ctx.FindMemoryType(req.MemoryTypeBits, hostFlags | MemoryPropertyFlags.HostCachedBit, MemoryPropertyFlags.DeviceLocalBit);
            if (_memoryType < 0) _memoryType = ctx.FindMemoryType(req.MemoryTypeBits, hostFlags, MemoryPropertyFlags.DeviceLocalBit);
            if (_memoryType < 0) _memoryType = ctx.FindMemoryType(req.MemoryTypeBits, hostFlags);
            if (_memoryType < 0) throw new VulkanUnsupportedException("the device offers no host-visible memory type for storage buffers");
            HostMapped = true;
            Alignment = Math.Max(Alignment, req.Alignment);
            return;
        }
        _memoryType = caps.UnifiedMemory ? ctx.FindMemoryType(req.MemoryTypeBits, mapped) : -1;
        HostMapped = _memoryType >= 0;
        if (_memoryType < 0) _memoryType = ctx.FindMemoryType(req.MemoryTypeBits, MemoryPropertyFlags.DeviceLocalBit);
        if (_memoryType < 0) _memoryType = ctx.FindMemoryType(req.MemoryTypeBits, 0);
        Alignment = Math.Max(Alignment, req.Alignment);
    }

    internal const BufferUsageFlags Usage = BufferUsageFlags.StorageBufferBit | BufferUsageFlags.TransferSrcBit | BufferUsageFlags.TransferDstBit;

    /// <summary>Device-local memory, or host memory the device reaches over the bus.</summary>
    public MemoryPlace Place { get; }
    public MemoryAccounting Accounting { get; } = new();
    public ulong Alignment { get; }
    public ulong BlockSize { get; }
    /// <summary>Bytes of memory the arena may reserve.</summary>
    public ulong Budget { get; }
    /// <summary>Device memory is host-visible and persistently mapped: uploads and downloads are plain copies.</summary>
    public bool HostMapped { get; }
    public int BlockCount { get { lock (_lock) return _blocks.Count; } }

    /// <summary>Allocates <paramref name="bytes"/> (≤ max allocation size) charged to <paramref name="category"/>.</summary>
    public DeviceAllocation Allocate(ulong bytes, MemoryCategory category, string name)
    {
        ThrowIfDisposed();
        if (bytes == 0) bytes = 4;
        ulong size = AlignUp(bytes, Alignment);
        if (size > _ctx.Caps.MaxMemoryAllocationSize)
            throw new ArgumentOutOfRangeException(nameof(bytes), $"'{name}': {ByteSize.Format(bytes)} exceeds the device's largest allocation ({ByteSize.Format(_ctx.Caps.MaxMemoryAllocationSize)}); split it");
        lock (_lock)
        {
            foreach (var b in _blocks)
            {
                if (b.Dedicated) continue;
                var off = b.TryTake(size);
                if (off.HasValue) return Finish(b, off.Value, size, bytes, category, name);
            }
            bool dedicated = size > BlockSize / 2;
            ulong blockBytes = dedicated ? size : BlockSize;
            if ((ulong)Accounting.ReservedBytes + blockBytes > Budget && !dedicated)
            {
                blockBytes = size; // a smaller block that fits exactly, before giving up
                dedicated = true;
            }
            if ((ulong)Accounting.ReservedBytes + blockBytes > Budget)
                throw new DeviceMemoryBudgetException(name, category, bytes, Budget, Accounting, "the memory budget would be exceeded");
            var block = NewBlock(blockBytes, dedicated, name, category, bytes);
            var o = block.TryTake(size) ?? throw new InvalidOperationException("fresh block cannot hold its first allocation");
            return Finish(block, o, size, bytes, category, name);
        }
    }

    private DeviceAllocation Finish(Block b, ulong offset, ulong size, ulong requested, MemoryCategory category, string name)
    {
        b.LiveCount++;
        Accounting.Charge(category, (long)requested);
        return new DeviceAllocation(this, b, offset, size, requested, category, name);
    }

    public void Free(DeviceAllocation a)
    {
        if (!ReferenceEquals(a.Arena, this)) throw new ArgumentException($"'{a.Name}' belongs to the {a.Arena.Place.ToString().ToLowerInvariant()} arena");
        lock (_lock)
        {
            if (a.Freed || IsDisposed) return;
            a.Freed = true;
            Accounting.Charge(a.Category, -(long)a.Requested);
            a.Block.Give(a.Offset, a.Size);
            a.Block.LiveCount--;
            if (a.Block.LiveCount == 0)
            {
                _blocks.Remove(a.Block);
                ReleaseBlock(a.Block);
            }
        }
    }

    private Block NewBlock(ulong bytes, bool dedicated, string name, MemoryCategory category, ulong requested)
    {
        var vk = _ctx.Vk;
        var buffer = _ctx.CreateRawBuffer(bytes, Usage, $"creating a {ByteSize.Format(bytes)} buffer for '{name}'");
        MemoryRequirements req;
        vk.GetBufferMemoryRequirements(_ctx.Device, buffer, &req);
        var alloc = new MemoryAllocateInfo { SType = StructureType.MemoryAllocateInfo, AllocationSize = req.Size, MemoryTypeIndex = (uint)_memoryType };
        DeviceMemory mem;
        var r = vk.AllocateMemory(_ctx.Device, &alloc, null, &mem);
        if (r != Result.Success)
        {
            vk.DestroyBuffer(_ctx.Device, buffer, null);
            if (r is Result.ErrorOutOfDeviceMemory or Result.ErrorOutOfHostMemory)
                throw new DeviceMemoryBudgetException(name, category, requested, Budget, Accounting, $"the driver refused a {ByteSize.Format(bytes)} block ({r})");
            VkCheck.Ok(r, $"allocating {ByteSize.Format(bytes)} of device memory for '{name}'");
        }
        VkCheck.Ok(vk.BindBufferMemory(_ctx.Device, buffer, mem, 0), "binding buffer memory");
        nint mapped = 0;
        if (HostMapped)
        {
            void* p;
            VkCheck.Ok(vk.MapMemory(_ctx.Device, mem, 0, Vk.WholeSize, 0, &p), "mapping device memory");
            mapped = (nint)p;
        }
        var block = new Block(mem, buffer, bytes, mapped, dedicated);
        _blocks.Add(block);
        Accounting.Reserve((long)req.Size);
        block.ReservedBytes = req.Size;
        return block;
    }

    private void ReleaseBlock(Block b)
    {
        var vk = _ctx.Vk;
        // Work that used the block must be finished before its memory goes away.
        _ctx.Commands?.WaitIdleIfUsing(b.Buffer);
        vk.DestroyBuffer(_ctx.Device, b.Buffer, null);
        if (b.Mapped != 0) vk.UnmapMemory(_ctx.Device, b.Memory);
        vk.FreeMemory(_ctx.Device, b.Memory, null);
        Accounting.Reserve(-(long)b.ReservedBytes);
    }

    protected override void DisposeCore()
    {
        lock (_lock)
        {
            foreach (var b in _blocks)
            {
                _ctx.Vk.DestroyBuffer(_ctx.Device, b.Buffer, null);
                if (b.Mapped != 0) _ctx.Vk.UnmapMemory(_ctx.Device, b.Memory);
                _ctx.Vk.FreeMemory(_ctx.Device, b.Memory, null);
            }
            _blocks.Clear();
        }
    }

    public static ulong AlignUp(ulong v, ulong a) => (v + a - 1) / a * a;

    /// <summary>One VkDeviceMemory with a buffer over all of it and a sorted first-fit free list.</summary>
    internal sealed class Block(DeviceMemory memory, VkBuffer buffer, ulong size, nint mapped, bool dedicated)
    {
        private readonly List<(ulong Offset, ulong Size)> _free = [(0, size)];
        public DeviceMemory Memory { get; } = memory;
        public VkBuffer Buffer { get; } = buffer;
        public ulong Size { get; } = size;
        public nint Mapped { get; } = mapped;
        public bool Dedicated { get; } = dedicated;
        public int LiveCount { get; set; }
        public ulong ReservedBytes { get; set; }

        public ulong? TryTake(ulong size)
        {
            for (int i = 0; i < _free.Count; i++)
            {
                var (o, s) = _free[i];
                if (s < size) continue;
                if (s == size) _free.RemoveAt(i);
                else _free[i] = (o + size, s - size);
                return o;
            }
            return null;
        }

        public void Give(ulong offset, ulong size)
        {
            int i = 0;
            while (i < _free.Count && _free[i].Offset < offset) i++;
            _free.Insert(i, (offset, size));
            // Coalesce with the next and the previous range.
            if (i + 1 < _free.Count && _free[i].Offset + _free[i].Size == _free[i + 1].Offset)
            {
                _free[i] = (_free[i].Offset, _free[i].Size + _free[i + 1].Size);
                _free.RemoveAt(i + 1);
            }
            if (i > 0 && _free[i - 1].Offset + _free[i - 1].Size == _free[i].Offset)
            {
                _free[i - 1] = (_free[i - 1].Offset, _free[i - 1].Size + _free[i].Size);
                _free.RemoveAt(i);
            }
        }
    }
}
