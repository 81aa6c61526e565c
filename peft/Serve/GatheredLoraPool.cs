// Device pools holding the A and B matrices of every resident plain-LoRA adapter, one slot per adapter, padded to one
// rank, per (layer, target linear): a batch step then adds all its LoRA rows' branches with one gathered shrink/expand
// pair per linear (S-LoRA), whatever the number of distinct adapters in it. An adapter that does not target a linear
// holds zeros there (its rows get exactly +0). Each row's branch is scaled by its adapter's LoRA scaling times its
// request's adapter scale (a per-row scale in the expand kernel). Used on the scheduler's thread only.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

/// <summary>A plain-LoRA adapter held in a <see cref="GatheredLoraPool"/> slot: its hooks do nothing, the batch applies it.</summary>
public sealed class GatheredLoraAdapter(int slot) : IAdapterRuntime
{
    public int Slot { get; } = slot;

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y) { }
}

public sealed class GatheredLoraPool : IDisposable
{
    private static readonly TargetModule[] Targets = Enum.GetValues<TargetModule>();
    private readonly LlamaConfig _config;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor[,] _a, _b;          // [layer, target]: [slots, rank, in] and [slots, out, rank]
    private readonly DeviceTensor _rowScale;          // [maxRows] each row's scale: its adapter's scaling × its request's
    private readonly float[] _scaling;                // [slots] each adapter's LoRA scaling
    private readonly DeviceTensor _rows, _t;          // [maxRows] int32 slot per row (−1 none); [maxRows, rank]
    private readonly Stack<int> _free;

    public GatheredLoraPool(VulkanContext ctx, LlamaConfig config, int slots, int rank, int maxRows)
    {
        _config = config;
        Slots = slots;
        Rank = rank;
        using var scope = new TensorScope();
        DeviceTensor T(string name, DType dt, MemoryCategory cat, params long[] shape) => scope.Add(DeviceTensor.Create(ctx, name, dt, shape, cat));
        _a = new DeviceTensor[config.NLayers, Targets.Length];
        _b = new DeviceTensor[config.NLayers, Targets.Length];
        for (int l = 0; l < config.NLayers; l++)
            foreach (var t in Targets)
            {
                var (outF, inF) = config.LinearShape(t);
                _a[l, (int)t] = T($"serve.lora_pool.{l}.{t}.a", DType.F32, MemoryCategory.Trainable, slots, rank, inF);
                _b[l, (int)t] = T($"serve.lora_pool.{l}.{t}.b", DType.F32, MemoryCategory.Trainable, slots, outF, rank);
                BasicOps.Fill(_a[l, (int)t], 0);
                BasicOps.Fill(_b[l, (int)t], 0);
            }
        _scaling = new float[slots];
        _rowScale = T("serve.lora_pool.row_scale", DType.F32, MemoryCategory.Activations, maxRows);
        _rows = T("serve.lora_pool.rows", DType.I32, MemoryCategory.Activations, maxRows);
        _t = T("serve.lora_pool.t", DType.F32, MemoryCategory.Activations, maxRows, rank);
        _owned = scope.Keep();
        _free = new Stack<int>(Enumerable.Range(0, slots).Reverse());
    }

    public int Slots { get; }
    public int Rank { get; }
    public int FreeSlots => _free.Count;

    /// <summary>Device bytes of one slot (every layer and target, A and B).</summary>
    public static long SlotBytes(LlamaConfig c, int rank) =>
        (long)c.NLayers * Targets.Sum(t => { var (o, i) = c.LinearShape(t); return (long)rank * (o + i); }) * sizeof(float);

    /// <summary>Whether the pool can hold <paramref name="adapter"/>: plain LoRA (no group pooling) of rank ≤ the pool's.</summary>
    public bool Fits(AdapterWeights adapter) =>
        adapter.Config.Method == PeftMethod.Lora && adapter.Config.SettingsOf<LoraSettings>().Rank <= Rank;

    /// <summary>Copies the adapter into a free slot; null when none is free.</summary>
    public GatheredLoraAdapter? Add(AdapterWeights adapter)
    {
        if (_free.Count == 0) return null;
        int slot = _free.Pop();
        var c = adapter.Config;
        var lora = c.SettingsOf<LoraSettings>();
        for (int l = 0; l < _config.NLayers; l++)
            foreach (var t in Targets)
            {
                var (outF, inF) = _config.LinearShape(t);
                var a = new float[Rank * inF];
                var b = new float[outF * Rank];
                if (c.Targets.Contains(t))
                {
                    var srcA = adapter.Tensors[AdapterWeights.LoraA(l, t)].Data;   // [rank, in]
                    var srcB = adapter.Tensors[AdapterWeights.LoraB(l, t)].Data;   // [out, rank]
                    Array.Copy(srcA, a, srcA.Length);
                    for (int o = 0; o < outF; o++) Array.Copy(srcB, o * lora.Rank, b, o * Rank, lora.Rank);
                }
                _a[l, (int)t].RowsView(slot, 1).Upload<float>(a);
                _b[l, (int)t].RowsView(slot, 1).Upload<float>(b);
            }
        _scaling[slot] = lora.Scaling;
        return new GatheredLoraAdapter(slot);
    }

    /// <summary>Frees a slot (its contents are overwritten by the next adapter placed there).</summary>
    public void Remove(GatheredLoraAdapter adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        _free.Push(adapter.Slot);
    }

    /// <summary>
    /// Uploads each row's slot (−1: not a pooled adapter) and scale (the adapter's scaling × the segment's adapter scale)
    /// for the next step's linears; false when no row has one.
    /// </summary>
    public bool SetRows(IReadOnlyList<BatchSegment> segments, int rows)
    {
        var ids = new int[rows];
        var scales = new float[rows];
        bool any = false;
        foreach (var s in segments)
        {
            int slot = s.Adapter is GatheredLoraAdapter g ? g.Slot : -1;
            any |= slot >= 0;
            Array.Fill(ids, slot, s.Start, s.Count);
            if (slot >= 0) Array.Fill(scales, _scaling[slot] * s.AdapterScale, s.Start, s.Count);
        }
        if (any)
        {
            _rows.RowsView(0, rows).Upload<int>(ids);
            _rowScale.RowsView(0, rows).Upload<float>(scales);
        }
        return any;
    }

    /// <summary>
    /// y [rows, out] += every pooled row's own LoRA branch of linear (layer, target), from its input x [rows, in];
    /// x and y hold the step's rows from <paramref name="firstRow"/> on.
    /// </summary>
    public void Apply(int layer, TargetModule target, DeviceTensor x, DeviceTensor y, int firstRow = 0)
    {
        long rows = x.Rows;
        var rowIds = _rows.RowsView(firstRow, rows);
        var t = _t.RowsView(firstRow, rows);
        GatheredLora.Shrink(x, _a[layer, (int)target], rowIds, t);
        GatheredLora.Expand(t, _b[layer, (int)target], _rowScale.RowsView(firstRow, rows), rowIds, y);
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
