// One training micro-batch on the device: forward through the frozen base with adapters (saving each layer's input,
// and with checkpointing recomputing a layer's activations when its backward needs them), chunked cross-entropy over
// the vocabulary (full-batch logits never exist), and the backward that flows input gradients through every frozen
// linear into the trainable adapter tensors. No gradient of a frozen weight is ever formed. With offloading, the saved
// layer inputs live in host memory and the device holds two [rows, dim] buffers instead of L+1.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

public sealed class TrainStep : IDisposable
{
    private readonly DeviceLlama _model;
    private readonly ITrainableAdapter _adapter;
    private readonly IReadOnlyList<IDisposable> _owned;   // everything the constructor allocated
    private readonly LayerState[] _states;
    private readonly DeviceTensor[] _layerIn;          // L+1 x [rows, dim]: input of each layer, then the final hidden state (device)
    private readonly DeviceTensor[] _savedIn;          // L x [rows, dim]: layer inputs in host memory (offloading only)
    private readonly DeviceTensor? _xA, _xB;           // [rows, dim] device ping-pong buffers (offloading only)
    private readonly DeviceTensor? _scratchOut;        // [rows, dim] recomputed layer output (checkpointing without offloading)
    private readonly DeviceTensor _hFinal, _dX, _dH;
    private readonly LayerGradients _grads;
    private readonly DeviceTensor _ids, _targets, _loss, _lossSum, _logits;
    private readonly IInputEmbeddingHook? _prompt;     // virtual tokens: P rows before each sequence's own
    private readonly int _rowsPerSeq;                  // rows of one sequence on the device: P + SeqLen (virtual tokens or prefix rows)

    public TrainStep(DeviceLlama model, ITrainableAdapter adapter, int batch, int seqLen, bool checkpointing, int logitRows = 128,
        bool offloadCheckpoints = false)
    {
        if (offloadCheckpoints && !checkpointing) throw new SettingException($"{TrainSettings.OffloadCheckpoints} keeps the layer inputs that checkpointing recomputes from: it needs {TrainSettings.Checkpointing} on");
        _model = model;
        _adapter = adapter;
        adapter.AttachBase(model);
        Batch = batch;
        SeqLen = seqLen;
        _prompt = adapter.InputEmbedding;
        _rowsPerSeq = seqLen + VirtualTokenRows.ExtraRows(adapter);
        Checkpointing = checkpointing;
        OffloadCheckpoints = offloadCheckpoints;
        var c = model.Config;
        var ctx = model.Context;
        int rows = batch * _rowsPerSeq;
        using var scope = new TensorScope();
        DeviceTensor T(string name, DType dt, params long[] shape) => scope.Add(DeviceTensor.Create(ctx, name, dt, shape, MemoryCategory.Activations));
        _states = checkpointing
            ? [scope.Add(new LayerState(ctx, c, batch, _rowsPerSeq, "train.layer"))]
            : [.. Enumerable.Range(0, c.NLayers).Select(l => scope.Add(new LayerState(ctx, c, batch, _rowsPerSeq, $"train.layer{l}")))];
        if (offloadCheckpoints)
        {
            _xA = T("train.x_a", DType.F32, rows, c.Dim);
            _xB = T("train.x_b", DType.F32, rows, c.Dim);
            _layerIn = [];
            _savedIn = [.. Enumerable.Range(0, c.NLayers).Select(l =>
            {
                return scope.Add(DeviceTensor.Create(ctx, $"train.x{l}.host", DType.F32, [rows, c.Dim], MemoryCategory.Activations, MemoryPlace.Host));
            })];
        }
        else
        {
            _layerIn = [.. Enumerable.Range(0, c.NLayers + 1).Select(l => T($"train.x{l}", DType.F32, rows, c.Dim))];
            _savedIn = [];
            if (checkpointing) _scratchOut = T("train.x_recompute", DType.F32, rows, c.Dim);
        }
        _hFinal = T("train.h_final", DType.F32, rows, c.Dim);
        if (adapter.AttentionPrefix is { Gated: true })
            throw new NotSupportedException("training a gated attention prefix needs its own softmax in the attention kernels, which the device runtime does not have yet");
        _grads = scope.Add(new LayerGradients(ctx, c, batch, _rowsPerSeq, adapter));
        // Skinny products on the shared-tiles path split K into one fixed scratch: reserved now, so the step's peak does
        // not depend on which products split (the memory model's "split-K partials").
        if (MatMul.Choose(ctx) == MatMulAlgorithm.SharedTiles) SplitK.Reserve(ctx);
        (_dX, _dH) = (_grads.DX, _grads.DH);
        _ids = T("train.ids", DType.I32, rows);
        _targets = T("train.targets", DType.I32, rows);
        _loss = T("train.loss_rows", DType.F32, rows);
        _lossSum = T("train.loss_sum", DType.F32, 1);
        LogitRows = Math.Min(logitRows, rows);
        _logits = T("train.logits", DType.F32, LogitRows, c.VocabSize);
        _owned = scope.Keep();
    }

    public int Batch { get; }
    /// <summary>Tokens of one sequence of data (the device rows add the adapter's virtual tokens, when it has them).</summary>
    public int SeqLen { get; }
    public bool Checkpointing { get; }
    /// <summary>Layer inputs are kept in host memory between the forward and the backward.</summary>
    public bool OffloadCheckpoints { get; }
    public int LogitRows { get; }

    /// <summary>
    /// When set, each phase of a step (layer forwards, the loss, layer backwards) is waited for and reported as
    /// (phase, done, total): for steps long enough that a person wants to see them move.
    /// </summary>
    public Action<string, int, int>? Progress { get; set; }

    private void Report(string phase, int done, int total)
    {
        if (Progress == null) return;
        _model.Context.Sync();
        Progress(phase, done, total);
    }

    private LayerState State(int l) => _states[Checkpointing ? 0 : l];

    /// <summary>
    /// Forward and backward of one micro-batch (ids and targets [batch·seqLen], target −1 = not predicted); gradients
    /// accumulate into the trainable tensors scaled by <paramref name="lossScale"/> (1 / predicted tokens of the whole
    /// optimizer step). Returns the sum of the per-token losses of this micro-batch (one host read).
    /// </summary>
    public double Run(int[] ids, int[] targets, float lossScale, uint seed) => RecordRun(ids, targets, lossScale, seed).ToArray<float>()[0];

    /// <summary>
    /// <see cref="Run"/> without the host read: records the micro-batch and returns the 1-element device tensor that will
    /// hold its loss sum (valid until the next run or evaluation of this step).
    /// </summary>
    public DeviceTensor RecordRun(int[] ids, int[] targets, float lossScale, uint seed)
    {
        var c = _model.Config;
        int rows = Batch * SeqLen;
        if (ids.Length != rows || targets.Length != rows) throw new ArgumentException($"a micro-batch has {rows} ids and targets");
        _adapter.Training = true;
        _adapter.StepSeed = seed;
        Upload(ids, targets);
        DeviceTensor xL;
        if (OffloadCheckpoints)
        {
            // x_a and x_b take turns as layer input and output; each input is copied out to host memory first.
            var (cur, next) = (_xA!, _xB!);
            Embed(cur);
            for (int l = 0; l < c.NLayers; l++)
            {
                BasicOps.Copy(cur, _savedIn[l]);
                DecoderLayer.Forward(_model, l, State(l), cur, next, Batch, _rowsPerSeq, 0, _adapter);
                (cur, next) = (next, cur);
                Report("forward", l + 1, c.NLayers);
            }
            xL = cur;
        }
        else
        {
            Embed(_layerIn[0]);
            for (int l = 0; l < c.NLayers; l++)
            {
                DecoderLayer.Forward(_model, l, State(l), _layerIn[l], _layerIn[l + 1], Batch, _rowsPerSeq, 0, _adapter);
                Report("forward", l + 1, c.NLayers);
            }
            xL = _layerIn[c.NLayers];
        }

        // Loss and its gradient in chunks of rows: logits, CE (dlogits in place), dh_final = dlogits·W_cls.
        float eps = (float)c.RmsNormEps;
        LossChunks(xL, lossScale);
        DecoderLayer.NormGrad(_adapter, -1, LlamaTensorKind.FinalNorm, _model.FinalNorm, xL, _dH, _dX, eps, accumulate: false);
        Report("loss", 1, 1);

        for (int l = c.NLayers - 1; l >= 0; l--)
        {
            if (OffloadCheckpoints)
            {
                BasicOps.Copy(_savedIn[l], _xA!);   // the final hidden state in x_a or x_b is no longer needed
                DecoderLayer.Forward(_model, l, State(l), _xA!, _xB!, Batch, _rowsPerSeq, 0, _adapter);
                DecoderLayer.Backward(_model, l, State(l), _xA!, _grads, _adapter);
                Report("backward", c.NLayers - l, c.NLayers);
                continue;
            }
            if (Checkpointing) DecoderLayer.Forward(_model, l, State(l), _layerIn[l], _scratchOut!, Batch, _rowsPerSeq, 0, _adapter);
            DecoderLayer.Backward(_model, l, State(l), _layerIn[l], _grads, _adapter);
            Report("backward", c.NLayers - l, c.NLayers);
        }
        if (_prompt != null) VirtualTokenRows.Backward(_prompt, _dX, Batch);   // _dX now holds ∂loss/∂(embedded input)
        BasicOps.SumAll(_loss, _lossSum);
        return _lossSum;
    }

    /// <summary>
    /// Forward only, in this step's own buffers (held-out evaluation costs no extra device memory): the sum of the
    /// per-token losses of ids/targets [batch·seqLen] (target −1 = not predicted). The adapter runs without dropout.
    /// </summary>
    public double Loss(int[] ids, int[] targets)
    {
        var c = _model.Config;
        int rows = Batch * SeqLen;
        if (ids.Length != rows || targets.Length != rows) throw new ArgumentException($"a micro-batch has {rows} ids and targets");
        _adapter.Training = false;
        Upload(ids, targets);
        var (cur, next) = OffloadCheckpoints ? (_xA!, _xB!) : (_layerIn[0], _layerIn[1]);
        Embed(cur);
        for (int l = 0; l < c.NLayers; l++)
        {
            DecoderLayer.Forward(_model, l, State(l), cur, next, Batch, _rowsPerSeq, 0, _adapter);
            (cur, next) = (next, cur);
        }
        LossChunks(cur, null);
        BasicOps.SumAll(_loss, _lossSum);
        return _lossSum.ToArray<float>()[0];
    }

    /// <summary>Uploads a micro-batch, with P placeholder slots (target −1) before each sequence when the adapter adds rows.</summary>
    private void Upload(int[] ids, int[] targets)
    {
        if (_rowsPerSeq > SeqLen) (ids, targets) = VirtualTokenRows.Expand(ids, targets, Batch, SeqLen, _rowsPerSeq - SeqLen);
        _ids.Upload<int>(ids);
        _targets.Upload<int>(targets);
    }

    /// <summary>The embedded input: token embedding rows, then the virtual tokens over their placeholder rows.</summary>
    private void Embed(DeviceTensor x)
    {
        _model.EmbedTokens(_ids, x);
        if (_prompt != null) VirtualTokenRows.WritePrompt(_prompt, x, Batch);
    }

    /// <summary>
    /// Final norm, then logits and per-token losses in chunks of rows (full-batch logits never exist); with a
    /// <paramref name="gradScale"/>, also dh_final = scale·dlogits·W_cls into dH.
    /// </summary>
    private void LossChunks(DeviceTensor xL, float? gradScale)
    {
        int rows = Batch * _rowsPerSeq;
        RmsNorm.Forward(xL, DecoderLayer.NormWeight(_adapter, -1, LlamaTensorKind.FinalNorm, _model.FinalNorm), _hFinal, (float)_model.Config.RmsNormEps);
        for (int s = 0; s < rows; s += LogitRows)
        {
            int n = Math.Min(LogitRows, rows - s);
            var logits = _logits.RowsView(0, n);
            _model.Classifier.Forward(_hFinal.RowsView(s, n), logits);
            if (gradScale is not { } scale)
            {
                CrossEntropy.Loss(logits, _targets.RowsView(s, n), _loss.RowsView(s, n));
                continue;
            }
            CrossEntropy.LossAndGradient(logits, _targets.RowsView(s, n), _loss.RowsView(s, n), scale);
            _model.Classifier.InputGrad(logits, _dH.RowsView(s, n));
        }
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
