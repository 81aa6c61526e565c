// Records many dispatches and transfers into command buffers, inserts a memory barrier only where a dispatch touches
// what an earlier one wrote (or writes what it read), submits in batches (never one submit per op), and reads
// per-kernel GPU time from timestamp queries when profiling.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Silk.NET.Vulkan;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;

namespace VkPeft.Runtime.Commands;

public sealed unsafe class CommandRecorder : DisposableObject
{
    private readonly VulkanContext _ctx;
    private readonly CommandPool _pool;
    private readonly Queue<Batch> _inflight = new();
    private readonly Stack<Batch> _spare = new();
    private readonly List<(ulong Buffer, ulong Start, ulong End)> _pendingWrites = [];
    private readonly List<(ulong Buffer, ulong Start, ulong End)> _pendingReads = [];
    private readonly int _perBatch;
    private Batch? _current;
    private VkBuffer _dummy;
    private DeviceMemory _dummyMemory;

    internal CommandRecorder(VulkanContext ctx)
    {
        _ctx = ctx;
        _perBatch = Math.Max(16, ctx.Options.DispatchesPerSubmit);
        ProfileEnabled = ctx.Options.Profile;
        var info = new CommandPoolCreateInfo
        {
            SType = StructureType.CommandPoolCreateInfo,
            QueueFamilyIndex = ctx.QueueFamily,
            Flags = CommandPoolCreateFlags.ResetCommandBufferBit,
        };
        CommandPool pool;
        VkCheck.Ok(ctx.Vk.CreateCommandPool(ctx.Device, &info, null, &pool), "creating the command pool");
        _pool = pool;
        CreateDummyBuffer();
    }

    /// <summary>Collect per-kernel GPU times into <see cref="Profile"/> (needs timestamp support).</summary>
    public bool ProfileEnabled { get; set; }
    public KernelProfile Profile { get; } = new();
    public long TotalDispatches { get; private set; }
    public long TotalSubmits { get; private set; }
    public long TotalBarriers { get; private set; }
    /// <summary>Blocking host waits for the GPU (a <see cref="Sync"/> that found work recorded or in flight).</summary>
    public long TotalWaits { get; private set; }
    /// <summary>Commands recorded but not yet submitted.</summary>
    public int PendingCommands => _current?.Commands ?? 0;
    public bool HasWorkInFlight => _inflight.Count > 0 || PendingCommands > 0;

    /// <summary>
    /// Records one dispatch after checking bindings, push size and group counts against the pipeline and device.
    /// <paramref name="onDeviceSeconds"/>, where the device has timestamps, receives the dispatch's measured device time
    /// once it has run (profiling or not).
    /// </summary>
    public void Dispatch<TPush>(ComputePipeline pipeline, ReadOnlySpan<Binding> bindings, in TPush push, uint groupsX, uint groupsY = 1, uint groupsZ = 1, string? label = null,
        Action<double>? onDeviceSeconds = null)
        where TPush : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<TPush>(Unsafe.AsPointer(ref Unsafe.AsRef(in push)), 1));
        Dispatch(pipeline, bindings, bytes, groupsX, groupsY, groupsZ, label, onDeviceSeconds);
    }

    public void Dispatch(ComputePipeline pipeline, ReadOnlySpan<Binding> bindings, ReadOnlySpan<byte> push, uint groupsX, uint groupsY = 1, uint groupsZ = 1, string? label = null,
        Action<double>? onDeviceSeconds = null)
    {
        ThrowIfDisposed();
        var caps = _ctx.Caps;
        if (bindings.Length != pipeline.BindingCount)
            throw new ArgumentException($"{pipeline.Name}: {bindings.Length} buffers bound, the shader declares {pipeline.BindingCount}");
        if (push.Length != pipeline.PushConstantSize)
            throw new ArgumentException($"{pipeline.Name}: {push.Length}-byte push constants, the shader's block is {pipeline.PushConstantSize} bytes");
        if (groupsX == 0 || groupsY == 0 || groupsZ == 0) return; // nothing to do
        if (groupsX > caps.MaxComputeWorkGroupCount[0] || groupsY > caps.MaxComputeWorkGroupCount[1] || groupsZ > caps.MaxComputeWorkGroupCount[2])
            throw new ArgumentException($"{pipeline.Name}: {groupsX}x{groupsY}x{groupsZ} workgroups exceed the device limit {string.Join("x", caps.MaxComputeWorkGroupCount)}");
        for (int i = 0; i < bindings.Length; i++)
        {
            var r = bindings[i].Range;
            if (r.Size > caps.MaxStorageBufferRange)
                throw new ArgumentException($"{pipeline.Name}: binding {i} spans {r.Size} bytes, over maxStorageBufferRange {caps.MaxStorageBufferRange}; split it");
            if (r.Offset % caps.MinStorageBufferOffsetAlignment != 0)
                throw new ArgumentException($"{pipeline.Name}: binding {i} offset {r.Offset} is not aligned to {caps.MinStorageBufferOffsetAlignment}");
        }
        var batch = Begin();
        if (batch.Dispatches >= _perBatch) { Flush(); batch = Begin(); }
        var vk = _ctx.Vk;
        var cb = batch.Cmd;

        BarrierIfHazard(bindings);

        // Descriptor set: every layout slot written, unused ones pointing at a small dummy buffer.
        var layout = _ctx.Pipelines.SetLayout;
        var allocInfo = new DescriptorSetAllocateInfo
        {
            SType = StructureType.DescriptorSetAllocateInfo,
            DescriptorPool = batch.DescriptorPool,
            DescriptorSetCount = 1,
            PSetLayouts = &layout,
        };
        DescriptorSet set;
        VkCheck.Ok(vk.AllocateDescriptorSets(_ctx.Device, &allocInfo, &set), $"allocating a descriptor set for {pipeline.Name}");
        var infos = stackalloc DescriptorBufferInfo[ComputePipelineCache.MaxBindings];
        var writes = stackalloc WriteDescriptorSet[ComputePipelineCache.MaxBindings];
        for (int i = 0; i < ComputePipelineCache.MaxBindings; i++)
        {
            infos[i] = i < bindings.Length
                ? new DescriptorBufferInfo(bindings[i].Range.Buffer, bindings[i].Range.Offset, Math.Max(bindings[i].Range.Size, 4))
                : new DescriptorBufferInfo(_dummy, 0, 16);
            writes[i] = new WriteDescriptorSet
            {
                SType = StructureType.WriteDescriptorSet,
                DstSet = set,
                DstBinding = (uint)i,
                DescriptorCount = 1,
                DescriptorType = DescriptorType.StorageBuffer,
                PBufferInfo = &infos[i],
            };
            batch.Buffers.Add(infos[i].Buffer.Handle);
        }
        vk.UpdateDescriptorSets(_ctx.Device, ComputePipelineCache.MaxBindings, writes, 0, null);

        vk.CmdBindPipeline(cb, PipelineBindPoint.Compute, pipeline.Handle);
        vk.CmdBindDescriptorSets(cb, PipelineBindPoint.Compute, _ctx.Pipelines.Layout, 0, 1, &set, 0, null);
        if (push.Length > 0)
            fixed (byte* p = push) vk.CmdPushConstants(cb, _ctx.Pipelines.Layout, ShaderStageFlags.ComputeBit, 0, (uint)push.Length, p);
        bool timed = (ProfileEnabled || onDeviceSeconds != null) && _ctx.Caps.TimestampsSupported;
        if (timed) vk.CmdWriteTimestamp(cb, PipelineStageFlags.ComputeShaderBit, batch.Queries, (uint)(2 * batch.Labels.Count));
        vk.CmdDispatch(cb, groupsX, groupsY, groupsZ);
        if (timed)
        {
            vk.CmdWriteTimestamp(cb, PipelineStageFlags.ComputeShaderBit, batch.Queries, (uint)(2 * batch.Labels.Count + 1));
            batch.Labels.Add(ProfileEnabled ? label ?? pipeline.Name : null);
            batch.Timers.Add(onDeviceSeconds);
        }
        batch.Dispatches++;
        batch.Commands++;
        TotalDispatches++;
    }

    /// <summary>Copies bytes between buffers on the device.</summary>
    public void Copy(BufferRange src, BufferRange dst, ulong bytes)
    {
        if (bytes == 0) return;
        if (bytes > src.Size || bytes > dst.Size) throw new ArgumentOutOfRangeException(nameof(bytes), $"copy of {bytes} bytes from a {src.Size}-byte range into a {dst.Size}-byte range");
        var batch = Begin();
        BarrierIfHazard([Binding.Read(src.Slice(0, bytes)), Binding.Write(dst.Slice(0, bytes))]);
        var region = new BufferCopy(src.Offset, dst.Offset, bytes);
        _ctx.Vk.CmdCopyBuffer(batch.Cmd, src.Buffer, dst.Buffer, 1, &region);
        batch.Buffers.Add(src.Buffer.Handle);
        batch.Buffers.Add(dst.Buffer.Handle);
        batch.Commands++;
    }

    /// <summary>Fills a range (size a multiple of 4) with a repeated 32-bit pattern (0 zeroes it).</summary>
    public void Fill(BufferRange dst, uint pattern)
    {
        if (dst.Size == 0) return;
        if (dst.Size % 4 != 0 || dst.Offset % 4 != 0) throw new ArgumentException("fill ranges must be 4-byte aligned");
        var batch = Begin();
        BarrierIfHazard([Binding.Write(dst)]);
        _ctx.Vk.CmdFillBuffer(batch.Cmd, dst.Buffer, dst.Offset, dst.Size, pattern);
        batch.Buffers.Add(dst.Buffer.Handle);
        batch.Commands++;
    }

    /// <summary>Writes up to 64 KiB of host data into a device range inside the command stream (no sync needed).</summary>
    public void Update(BufferRange dst, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        if (data.Length > 65536 || data.Length % 4 != 0 || dst.Offset % 4 != 0 || (ulong)data.Length > dst.Size)
            throw new ArgumentException($"inline update of {data.Length} bytes: must be ≤ 65536, a multiple of 4 and fit the {dst.Size}-byte range");
        var batch = Begin();
        BarrierIfHazard([Binding.Write(dst.Slice(0, (ulong)data.Length))]);
        fixed (byte* p = data) _ctx.Vk.CmdUpdateBuffer(batch.Cmd, dst.Buffer, dst.Offset, (ulong)data.Length, p);
        batch.Buffers.Add(dst.Buffer.Handle);
        batch.Commands++;
    }

    /// <summary>Submits what is recorded without waiting.</summary>
    public void Flush()
    {
        if (_current == null || _current.Commands == 0) return;
        var batch = _current;
        _current = null;
        var vk = _ctx.Vk;
        VkCheck.Ok(vk.EndCommandBuffer(batch.Cmd), "ending a command buffer");
        var cb = batch.Cmd;
        var submit = new SubmitInfo { SType = StructureType.SubmitInfo, CommandBufferCount = 1, PCommandBuffers = &cb };
        VkCheck.Ok(vk.QueueSubmit(_ctx.Queue, 1, &submit, batch.Fence), "submitting work to the queue");
        _inflight.Enqueue(batch);
        TotalSubmits++;
        _pendingReads.Clear();
        _pendingWrites.Clear();
    }

    /// <summary>Submits and waits for everything; collects timestamps; fails on validation messages.</summary>
    public void Sync()
    {
        ThrowIfDisposed();
        Flush();
        if (_inflight.Count > 0) TotalWaits++;
        while (_inflight.Count > 0) Retire(_inflight.Dequeue());
        _ctx.CheckValidation();
    }

    internal void WaitIdleIfUsing(VkBuffer buffer)
    {
        if (IsDisposed) return;
        bool used = (_current?.Buffers.Contains(buffer.Handle) ?? false) || _inflight.Any(b => b.Buffers.Contains(buffer.Handle));
        if (used) Sync();
    }

    private void Retire(Batch batch)
    {
        var vk = _ctx.Vk;
        var fence = batch.Fence;
        VkCheck.Ok(vk.WaitForFences(_ctx.Device, 1, &fence, true, ulong.MaxValue), "waiting for the GPU");
        if (batch.Labels.Count > 0)
        {
            var stamps = new ulong[batch.Labels.Count * 2];
            fixed (ulong* s = stamps)
                VkCheck.Ok(vk.GetQueryPoolResults(_ctx.Device, batch.Queries, 0, (uint)stamps.Length, (nuint)(stamps.Length * 8), s, 8,
                    QueryResultFlags.Result64Bit | QueryResultFlags.ResultWaitBit), "reading timestamps");
            for (int i = 0; i < batch.Labels.Count; i++)
            {
                double ns = (stamps[2 * i + 1] - stamps[2 * i]) * (double)_ctx.Caps.TimestampPeriodNs;
                if (batch.Labels[i] is { } label) Profile.Add(label, ns);
                batch.Timers[i]?.Invoke(ns * 1e-9);
            }
        }
        foreach (var a in batch.OnComplete) a();
        batch.OnComplete.Clear();
        VkCheck.Ok(vk.ResetFences(_ctx.Device, 1, &fence), "resetting a fence");
        _spare.Push(batch);
    }

    /// <summary>Runs <paramref name="action"/> once the currently recorded work has finished on the GPU.</summary>
    public void WhenComplete(Action action) => Begin().OnComplete.Add(action);

    private void BarrierIfHazard(ReadOnlySpan<Binding> bindings)
    {
        bool hazard = false;
        foreach (var b in bindings)
        {
            ulong buf = b.Range.Buffer.Handle, s = b.Range.Offset, e = b.Range.Offset + Math.Max(b.Range.Size, 1);
            if (Overlaps(_pendingWrites, buf, s, e) || ((b.Access & Access.Write) != 0 && Overlaps(_pendingReads, buf, s, e)))
            {
                hazard = true;
                break;
            }
        }
        if (hazard)
        {
            var barrier = new MemoryBarrier
            {
                SType = StructureType.MemoryBarrier,
                SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit | AccessFlags.ShaderReadBit | AccessFlags.TransferReadBit,
                DstAccessMask = AccessFlags.ShaderReadBit | AccessFlags.ShaderWriteBit | AccessFlags.TransferReadBit | AccessFlags.TransferWriteBit,
            };
            const PipelineStageFlags stages = PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit;
            _ctx.Vk.CmdPipelineBarrier(Begin().Cmd, stages, stages, 0, 1, &barrier, 0, null, 0, null);
            _pendingReads.Clear();
            _pendingWrites.Clear();
            TotalBarriers++;
        }
        foreach (var b in bindings)
        {
            var entry = (b.Range.Buffer.Handle, b.Range.Offset, b.Range.Offset + Math.Max(b.Range.Size, 1));
            if ((b.Access & Access.Write) != 0) _pendingWrites.Add(entry);
            if ((b.Access & Access.Read) != 0) _pendingReads.Add(entry);
        }
    }

    private static bool Overlaps(List<(ulong Buffer, ulong Start, ulong End)> list, ulong buf, ulong s, ulong e)
    {
        foreach (var x in list)
            if (x.Buffer == buf && x.Start < e && s < x.End) return true;
        return false;
    }

    private Batch Begin()
    {
        if (_current != null) return _current;
        var batch = _spare.Count > 0 ? _spare.Pop() : NewBatch();
        var vk = _ctx.Vk;
        VkCheck.Ok(vk.ResetDescriptorPool(_ctx.Device, batch.DescriptorPool, 0), "resetting a descriptor pool");
        VkCheck.Ok(vk.ResetCommandBuffer(batch.Cmd, 0), "resetting a command buffer");
        var begin = new CommandBufferBeginInfo { SType = StructureType.CommandBufferBeginInfo, Flags = CommandBufferUsageFlags.OneTimeSubmitBit };
        VkCheck.Ok(vk.BeginCommandBuffer(batch.Cmd, &begin), "beginning a command buffer");
        if (_ctx.Caps.TimestampsSupported) vk.CmdResetQueryPool(batch.Cmd, batch.Queries, 0, (uint)(2 * _perBatch));
        batch.Dispatches = 0;
        batch.Commands = 0;
        batch.Labels.Clear();
        batch.Timers.Clear();
        batch.Buffers.Clear();
        // Work submitted earlier is ordered before this batch by a barrier at its start.
        var barrier = new MemoryBarrier
        {
            SType = StructureType.MemoryBarrier,
            SrcAccessMask = AccessFlags.ShaderWriteBit | AccessFlags.TransferWriteBit,
            DstAccessMask = AccessFlags.ShaderReadBit | AccessFlags.ShaderWriteBit | AccessFlags.TransferReadBit | AccessFlags.TransferWriteBit,
        };
        const PipelineStageFlags stages = PipelineStageFlags.ComputeShaderBit | PipelineStageFlags.TransferBit;
        vk.CmdPipelineBarrier(batch.Cmd, stages, stages, 0, 1, &barrier, 0, null, 0, null);
        _current = batch;
        return batch;
    }

    private Batch NewBatch()
    {
        var vk = _ctx.Vk;
        var alloc = new CommandBufferAllocateInfo
        {
            SType = StructureType.CommandBufferAllocateInfo,
            CommandPool = _pool,
            Level = CommandBufferLevel.Primary,
            CommandBufferCount = 1,
        };
        CommandBuffer cb;
        VkCheck.Ok(vk.AllocateCommandBuffers(_ctx.Device, &alloc, &cb), "allocating a command buffer");
        var fenceInfo = new FenceCreateInfo { SType = StructureType.FenceCreateInfo };
        Fence fence;
        VkCheck.Ok(vk.CreateFence(_ctx.Device, &fenceInfo, null, &fence), "creating a fence");
        var size = new DescriptorPoolSize(DescriptorType.StorageBuffer, (uint)(_perBatch * ComputePipelineCache.MaxBindings));
        var poolInfo = new DescriptorPoolCreateInfo
        {
            SType = StructureType.DescriptorPoolCreateInfo,
            MaxSets = (uint)_perBatch,
            PoolSizeCount = 1,
            PPoolSizes = &size,
        };
        DescriptorPool dp;
        VkCheck.Ok(vk.CreateDescriptorPool(_ctx.Device, &poolInfo, null, &dp), "creating a descriptor pool");
        QueryPool qp = default;
        if (_ctx.Caps.TimestampsSupported)
        {
            var qpInfo = new QueryPoolCreateInfo { SType = StructureType.QueryPoolCreateInfo, QueryType = QueryType.Timestamp, QueryCount = (uint)(2 * _perBatch) };
            VkCheck.Ok(vk.CreateQueryPool(_ctx.Device, &qpInfo, null, &qp), "creating a timestamp query pool");
        }
        return new Batch(cb, fence, dp, qp);
    }

    private void CreateDummyBuffer()
    {
        var vk = _ctx.Vk;
        _dummy = _ctx.CreateRawBuffer(256, BufferUsageFlags.StorageBufferBit, "creating the placeholder buffer");
        MemoryRequirements req;
        vk.GetBufferMemoryRequirements(_ctx.Device, _dummy, &req);
        int type = _ctx.FindMemoryType(req.MemoryTypeBits, 0);
        var alloc = new MemoryAllocateInfo { SType = StructureType.MemoryAllocateInfo, AllocationSize = req.Size, MemoryTypeIndex = (uint)type };
        DeviceMemory mem;
        VkCheck.Ok(vk.AllocateMemory(_ctx.Device, &alloc, null, &mem), "allocating the placeholder buffer");
        VkCheck.Ok(vk.BindBufferMemory(_ctx.Device, _dummy, mem, 0), "binding the placeholder buffer");
        _dummyMemory = mem;
    }

    protected override void DisposeCore()
    {
        var vk = _ctx.Vk;
        try
        {
            Flush();
            while (_inflight.Count > 0) Retire(_inflight.Dequeue());
        }
        catch (VulkanException) { /* the device is going away; nothing more can be done */ }
        if (_current != null) _spare.Push(_current);
        foreach (var b in _spare)
        {
            vk.DestroyFence(_ctx.Device, b.Fence, null);
            vk.DestroyDescriptorPool(_ctx.Device, b.DescriptorPool, null);
            if (b.Queries.Handle != 0) vk.DestroyQueryPool(_ctx.Device, b.Queries, null);
        }
        vk.DestroyCommandPool(_ctx.Device, _pool, null);
        vk.DestroyBuffer(_ctx.Device, _dummy, null);
        vk.FreeMemory(_ctx.Device, _dummyMemory, null);
    }

    private sealed class Batch(CommandBuffer cmd, Fence fence, DescriptorPool pool, QueryPool queries)
    {
        public CommandBuffer Cmd { get; } = cmd;
        public Fence Fence { get; } = fence;
        public DescriptorPool DescriptorPool { get; } = pool;
        public QueryPool Queries { get; } = queries;
        public int Dispatches { get; set; }
        public int Commands { get; set; }
        public List<string?> Labels { get; } = [];   // per timed dispatch: its profile label (null: timed only for a callback)
        public List<Action<double>?> Timers { get; } = [];   // per timed dispatch: who wants its device seconds
        public HashSet<ulong> Buffers { get; } = [];
        public List<Action> OnComplete { get; } = [];
    }
}
