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

    public LlamaRunner(DeviceLlama model, int maxBatch, int maxSeq, bool kvCache, int logitRows = 64)
    {
        Model = model;
        MaxBatch = maxBatch;
        MaxSeq = maxSeq;
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
        _state = new LayerState(model.Context, c, maxBatch, maxSeq, "act");
        if (kvCache)
        {
            _kCache = new DeviceTensor[c.NLayers];
            _vCache = new DeviceTensor[c.NLayers];
            for (int l = 0; l < c.NLayers; l++)
            {
                _kCache[l] = T($"kv.{l}.k", DType.F32, maxSeq, c.KvDim);
                _vCache[l] = T($"kv.{l}.v", DType.F32, maxSeq, c.KvDim);
            }
        }
    }

    public DeviceLlama Model { get; }
    public IAdapterRuntime? Adapter { get; set; }
    public int MaxBatch { get; }
    public int MaxSeq { get; }
    public int LogitRows { get; }
    public DeviceTensor X { get; }        // [B·T, dim] residual stream
    public DeviceTensor HFinal { get; }   // [B·T, dim] final-normed hidden state
    public DeviceTensor Ids { get; }      // [B·T] int32
    public DeviceTensor Targets { get; }  // [B·T] int32, -1 = not predicted
    public DeviceTensor LossRows { get; } // [B·T]
    public DeviceTensor Logits { get; }   // [LogitRows, vocab]

    private static DeviceTensor Rows(DeviceTensor t, long n) => LayerState.Rows(t, n);

    /// <summary>Embeds <paramref name="rows"/> token ids already in <see cref="Ids"/> into <see cref="X"/>.</summary>
    public void Embed(int rows)
    {
        if (Adapter?.InputEmbedding != null)
            throw new NotSupportedException("virtual input tokens need prefix rows in the embedding kernel, which the device runtime does not have yet");
        Model.EmbedTokens(Rows(Ids, rows), Rows(X, rows));
    }

    /// <summary>Every layer over X: <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens at positions startPos….</summary>
    public void Layers(int batch, int seqLen, int startPos = 0)
    {
        var x = Rows(X, batch * seqLen);
        for (int l = 0; l < Model.Layers.Length; l++)
            DecoderLayer.Forward(Model, l, _state, x, x, batch, seqLen, startPos, Adapter, _kCache?[l], _vCache?[l]);
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
