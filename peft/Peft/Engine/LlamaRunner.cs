// Runs a DeviceLlama forward for inference: a batch of token sequences (evaluation: per-token NLL in vocabulary chunks)
// or one sequence with a KV cache (generation). Buffers are allocated once for the largest batch and length asked.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Engine;

public sealed class LlamaRunner : IDisposable
{
    private readonly List<DeviceTensor> _owned = [];
    private readonly DeviceTensor[]? _kCache, _vCache;   // per layer [maxSeq, kv_dim] for generation
    private readonly LayerState _state;
    private readonly DeviceTensor? _xVirtual;            // [B·(P+T), dim] residual stream with the virtual tokens' rows
    private readonly int _virtualTokens;                 // P rows of the adapter's virtual tokens (or prefix) before each sequence

    /// <summary>
    /// Buffers for <paramref name="maxBatch"/> sequences of <paramref name="maxSeq"/> tokens; an adapter with virtual
    /// tokens must be given here (<paramref name="adapter"/>): each sequence then also holds its P virtual rows.
    /// </summary>
    public LlamaRunner(DeviceLlama model, int maxBatch, int maxSeq, bool kvCache, int logitRows = 64, IAdapterRuntime? adapter = null)
    {
        Model = model;
        MaxBatch = maxBatch;
        MaxSeq = maxSeq;
        adapter?.AttachBase(model);
        _adapter = adapter;
        _virtualTokens = VirtualTokenRows.ExtraRows(adapter);
        var c = model.Config;
        int rows = maxBatch * maxSeq;
        DeviceTensor T(string name, DType dt, params long[] shape)
        {
            var t = DeviceTensor.Create(model.Context, name, dt, shape, MemoryCategory.Activations);
            _owned.Add(t);
            return t;
        }
        X = T("act.x", DType.F32, rows, c.Dim);
        HFinal = T("act.h_final", DType.F32, rows, c.Dim);
        Ids = T("act.ids", DType.I32, rows);
        Targets = T("act.targets", DType.I32, rows);
        LossRows = T("act.loss", DType.F32, rows);
        LogitRows = Math.Min(logitRows, rows);
        Logits = T("act.logits", DType.F32, LogitRows, c.VocabSize);
        _state = new LayerState(model.Context, c, maxBatch, maxSeq + _virtualTokens, "act");
        if (_virtualTokens > 0) _xVirtual = T("act.x_virtual", DType.F32, maxBatch * (maxSeq + _virtualTokens), c.Dim);
        if (kvCache)
        {
            _kCache = new DeviceTensor[c.NLayers];
            _vCache = new DeviceTensor[c.NLayers];
            for (int l = 0; l < c.NLayers; l++)
            {
                _kCache[l] = T($"kv.{l}.k", DType.F32, maxSeq + _virtualTokens, c.KvDim);
                _vCache[l] = T($"kv.{l}.v", DType.F32, maxSeq + _virtualTokens, c.KvDim);
            }
        }
    }

    public DeviceLlama Model { get; }
    private IAdapterRuntime? _adapter;

    /// <summary>The adapter the layers run with; one with virtual tokens must be the one the runner was built for.</summary>
    public IAdapterRuntime? Adapter
    {
        get => _adapter;
        set
        {
            if (VirtualTokenRows.ExtraRows(value) != _virtualTokens)
                throw new ArgumentException("an adapter with virtual tokens or a prefix is given to the LlamaRunner constructor, which sizes the rows for them");
            value?.AttachBase(Model);
            _adapter = value;
        }
    }
    public int MaxBatch { get; }
    public int MaxSeq { get; }
    public int LogitRows { get; }
    public DeviceTensor X { get; }        // [B·T, dim] residual stream
    public DeviceTensor HFinal { get; }   // [B·T, dim] final-normed hidden state
    public DeviceTensor Ids { get; }      // [B·T] int32
    public DeviceTensor Targets { get; }  // [B·T] int32, -1 = not predicted
    public DeviceTensor LossRows { get; } // [B·T]
    public DeviceTensor Logits { get; }   // [LogitRows, vocab]

    /// <summary>Layer <paramref name="layer"/>'s key and value cache [positions, kv_dim] (keys after RoPE); null without a cache.</summary>
    public (DeviceTensor Keys, DeviceTensor Values)? KvCache(int layer) => _kCache == null ? null : (_kCache[layer], _vCache![layer]);

    private static DeviceTensor Rows(DeviceTensor t, long n) => LayerState.Rows(t, n);

    /// <summary>Embeds <paramref name="rows"/> token ids already in <see cref="Ids"/> into <see cref="X"/>.</summary>
    public void Embed(int rows) => Model.EmbedTokens(Rows(Ids, rows), Rows(X, rows));

    /// <summary>
    /// Every layer over X: <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens at positions startPos….
    /// With virtual tokens or a prefix, a sequence starting at position 0 runs with its P extra rows first (generation keeps
    /// their keys and values in the KV cache once) and later tokens sit at positions startPos + P….
    /// </summary>
    public void Layers(int batch, int seqLen, int startPos = 0)
    {
        var x = Rows(X, batch * seqLen);
        if (_virtualTokens == 0)
        {
            RunLayers(x, batch, seqLen, startPos);
            return;
        }
        if (startPos > 0)
        {
            RunLayers(x, batch, seqLen, startPos + _virtualTokens);
            return;
        }
        int rowsPerSeq = seqLen + _virtualTokens;
        var xv = Rows(_xVirtual!, batch * rowsPerSeq);
        VirtualTokenRows.Scatter(_adapter!.InputEmbedding, _virtualTokens, x, xv, batch, seqLen);
        RunLayers(xv, batch, rowsPerSeq, 0);
        VirtualTokenRows.Gather(xv, x, batch, seqLen, _virtualTokens);
    }

    private void RunLayers(DeviceTensor x, int batch, int seqLen, int startPos)
    {
        for (int l = 0; l < Model.Layers.Length; l++)
            DecoderLayer.Forward(Model, l, _state, x, x, batch, seqLen, startPos, _adapter, _kCache?[l], _vCache?[l]);
    }

    /// <summary>Final norm of X into HFinal for <paramref name="rows"/> rows.</summary>
    public void FinalNorm(int rows) => RmsNorm.Forward(Rows(X, rows), DecoderLayer.NormWeight(Adapter, -1, Models.LlamaTensorKind.FinalNorm, Model.FinalNorm), Rows(HFinal, rows), (float)Model.Config.RmsNormEps);

    /// <summary>Logits of rows [start, start+count) of HFinal (count ≤ LogitRows) into Logits[0..count).</summary>
    public DeviceTensor LogitsOf(int start, int count)
    {
        var logits = Logits.RowsView(0, count);
        Model.Classifier.Forward(HFinal.RowsView(start, count), logits);
        return logits;
    }

    /// <summary>Per-token NLL of Targets (0 where the target is -1) for <paramref name="rows"/> rows, in chunks of LogitRows.</summary>
    public void TokenLosses(int rows)
    {
        for (int s = 0; s < rows; s += LogitRows)
        {
            int n = Math.Min(LogitRows, rows - s);
            CrossEntropy.Loss(LogitsOf(s, n), Targets.RowsView(s, n), LossRows.RowsView(s, n));
        }
    }

    public void Dispose()
    {
        _state.Dispose();
        foreach (var t in _owned) t.Dispose();
    }
}
