// One training micro-batch on the device: forward through the frozen base with adapters (saving each layer's input,
// and with checkpointing recomputing a layer's activations when its backward needs them), chunked cross-entropy over
// the vocabulary (full-batch logits never exist), and the backward that flows input gradients through every frozen
// linear into the trainable adapter tensors. No gradient of a frozen weight is ever formed. With offloading, the saved
// layer inputs live in host memory and the device holds two [rows, dim] buffers instead of L+1.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;

namespace VkPeft.Peft.Training;

public sealed class TrainStep : IDisposable
{
    private readonly DeviceLlama _model;
    private readonly ITrainableAdapter _adapter;
    private readonly List<DeviceTensor> _owned = [];
    private readonly LayerState[] _states;
    private readonly DeviceTensor[] _layerIn;          // L+1 x [rows, dim]: input of each layer, then the final hidden state (device)
    private readonly DeviceTensor[] _savedIn;          // L x [rows, dim]: layer inputs in host memory (offloading only)
    private readonly DeviceTensor? _xA, _xB;           // [rows, dim] device ping-pong buffers (offloading only)
    private readonly DeviceTensor? _scratchOut;        // [rows, dim] recomputed layer output (checkpointing without offloading)
    private readonly DeviceTensor _hFinal, _dX, _dH, _dO, _dQ, _dK, _dV, _delta;
    private readonly DeviceTensor? _dZ, _dHx;   // [rows, dim] block-hook gradients (bottleneck adapters only)
    private readonly DeviceTensor _ids, _targets, _loss, _lossSum, _logits;

    public TrainStep(DeviceLlama model, ITrainableAdapter adapter, int batch, int seqLen, bool checkpointing, int logitRows = 128,
        bool offloadCheckpoints = false)
    {
        if (offloadCheckpoints && !checkpointing) throw new FormatException("--offload-checkpoints keeps the layer inputs that checkpointing recomputes from: it needs --checkpointing on");
        _model = model;
        _adapter = adapter;
        Batch = batch;
        SeqLen = seqLen;
        Checkpointing = checkpointing;
        OffloadCheckpoints = offloadCheckpoints;
        var c = model.Config;
        var ctx = model.Context;
        int rows = batch * seqLen;
        DeviceTensor T(string name, DType dt, params long[] shape)
        {
            var t = DeviceTensor.Create(ctx, name, dt, shape, MemoryCategory.Activations);
            _owned.Add(t);
            return t;
        }
        _states = checkpointing
            ? [new LayerState(ctx, c, batch, seqLen, "train.layer")]
            : [.. Enumerable.Range(0, c.NLayers).Select(l => new LayerState(ctx, c, batch, seqLen, $"train.layer{l}"))];
        if (offloadCheckpoints)
        {
            _xA = T("train.x_a", DType.F32, rows, c.Dim);
            _xB = T("train.x_b", DType.F32, rows, c.Dim);
            _layerIn = [];
            _savedIn = [.. Enumerable.Range(0, c.NLayers).Select(l =>
            {
                var t = DeviceTensor.Create(ctx, $"train.x{l}.host", DType.F32, [rows, c.Dim], MemoryCategory.Activations, MemoryPlace.Host);
                _owned.Add(t);
                return t;
            })];
        }
        else
        {
            _layerIn = [.. Enumerable.Range(0, c.NLayers + 1).Select(l => T($"train.x{l}", DType.F32, rows, c.Dim))];
            _savedIn = [];
            if (checkpointing) _scratchOut = T("train.x_recompute", DType.F32, rows, c.Dim);
        }
        _hFinal = T("train.h_final", DType.F32, rows, c.Dim);
        _dX = T("train.dx", DType.F32, rows, c.Dim);
        _dH = T("train.dh", DType.F32, rows, c.Dim);
        _dO = T("train.do", DType.F32, rows, c.QDim);
        _dQ = T("train.dq", DType.F32, rows, c.QDim);
        _dK = T("train.dk", DType.F32, rows, c.KvDim);
        _dV = T("train.dv", DType.F32, rows, c.KvDim);
        _delta = T("train.attn_delta", DType.F32, batch, c.NHeads, seqLen);
        if (adapter.HasBlockHooks)
        {
            _dZ = T("train.dz", DType.F32, rows, c.Dim);
            _dHx = T("train.dh_adapter", DType.F32, rows, c.Dim);
        }
        _ids = T("train.ids", DType.I32, rows);
        _targets = T("train.targets", DType.I32, rows);
        _loss = T("train.loss_rows", DType.F32, rows);
        _lossSum = T("train.loss_sum", DType.F32, 1);
        LogitRows = Math.Min(logitRows, rows);
        _logits = T("train.logits", DType.F32, LogitRows, c.VocabSize);
    }

    public int Batch { get; }
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
    public double Run(int[] ids, int[] targets, float lossScale, uint seed)
    {
        var c = _model.Config;
        int rows = Batch * SeqLen;
        if (ids.Length != rows || targets.Length != rows) throw new ArgumentException($"a micro-batch has {rows} ids and targets");
        _adapter.Training = true;
        _adapter.StepSeed = seed;
        _ids.Upload<int>(ids);
        _targets.Upload<int>(targets);
        DeviceTensor xL;
        if (OffloadCheckpoints)
        {
            // x_a and x_b take turns as layer input and output; each input is copied out to host memory first.
            var (cur, next) = (_xA!, _xB!);
            _model.EmbedTokens(_ids, cur);
            for (int l = 0; l < c.NLayers; l++)
            {
                BasicOps.Copy(cur, _savedIn[l]);
                LayerForward.Run(_model, l, State(l), cur, next, Batch, SeqLen, 0, _adapter);
                (cur, next) = (next, cur);
                Report("forward", l + 1, c.NLayers);
            }
            xL = cur;
        }
        else
        {
            _model.EmbedTokens(_ids, _layerIn[0]);
            for (int l = 0; l < c.NLayers; l++)
            {
                LayerForward.Run(_model, l, State(l), _layerIn[l], _layerIn[l + 1], Batch, SeqLen, 0, _adapter);
                Report("forward", l + 1, c.NLayers);
            }
            xL = _layerIn[c.NLayers];
        }

        // Loss and its gradient in chunks of rows: logits, CE (dlogits in place), dh_final = dlogits·W_cls.
        float eps = (float)c.RmsNormEps;
        LossChunks(xL, lossScale);
        RmsNorm.Backward(xL, _model.FinalNorm, _dH, _dX, eps);
        Report("loss", 1, 1);

        for (int l = c.NLayers - 1; l >= 0; l--)
        {
            if (OffloadCheckpoints)
            {
                BasicOps.Copy(_savedIn[l], _xA!);   // the final hidden state in x_a or x_b is no longer needed
                LayerForward.Run(_model, l, State(l), _xA!, _xB!, Batch, SeqLen, 0, _adapter);
                LayerBackward(l, State(l), _xA!);
                Report("backward", c.NLayers - l, c.NLayers);
                continue;
            }
            if (Checkpointing) LayerForward.Run(_model, l, State(l), _layerIn[l], _scratchOut!, Batch, SeqLen, 0, _adapter);
            LayerBackward(l, State(l), _layerIn[l]);
            Report("backward", c.NLayers - l, c.NLayers);
        }
        BasicOps.SumAll(_loss, _lossSum);
        return _lossSum.ToArray<float>()[0];
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
        _ids.Upload<int>(ids);
        _targets.Upload<int>(targets);
        var (cur, next) = OffloadCheckpoints ? (_xA!, _xB!) : (_layerIn[0], _layerIn[1]);
        _model.EmbedTokens(_ids, cur);
        for (int l = 0; l < c.NLayers; l++)
        {
            LayerForward.Run(_model, l, State(l), cur, next, Batch, SeqLen, 0, _adapter);
            (cur, next) = (next, cur);
        }
        LossChunks(cur, null);
        BasicOps.SumAll(_loss, _lossSum);
        return _lossSum.ToArray<float>()[0];
    }

    /// <summary>
    /// Final norm, then logits and per-token losses in chunks of rows (full-batch logits never exist); with a
    /// <paramref name="gradScale"/>, also dh_final = scale·dlogits·W_cls into dH.
    /// </summary>
    private void LossChunks(DeviceTensor xL, float? gradScale)
    {
        int rows = Batch * SeqLen;
        RmsNorm.Forward(xL, _model.FinalNorm, _hFinal, (float)_model.Config.RmsNormEps);
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

    /// <summary>dX: gradient of the layer output in, gradient of the layer input out (LoRA gradients accumulate).</summary>
    private void LayerBackward(int l, LayerState s, DeviceTensor xIn)
    {
        var c = _model.Config;
        var layer = _model.Layers[l];
        float eps = (float)c.RmsNormEps;
        var lora = _adapter;

        // MLP block: x_out = x_mid + adapter(down(silu(gate(h2))·up(h2))).
        var dz = _dX;
        if (_dZ != null)
        {
            BasicOps.Fill(_dHx!, 0);
            lora.MlpOutputBackward(l, s.H2, _dX, _dZ, _dHx!);
            dz = _dZ;
        }
        // ∂loss/∂swiglu overwrites swiglu: the adapter reads it first and writes its input gradient there, then the base adds.
        var dS = s.S;
        bool adapterWrote = lora.LinearBackward(l, TargetModule.Down, s.S, dz, dS, overwriteDx: true);
        layer.Down.InputGrad(dz, dS, beta: adapterWrote ? 1 : 0);
        // dgate and dup overwrite gate and up: the layer's backward needs neither afterwards (checkpointing recomputes them).
        var (dG, dU) = (s.G, s.U);
        SwiGlu.Backward(s.G, s.U, dS, dG, dU);
        layer.Gate.InputGrad(dG, _dH);
        lora.LinearBackward(l, TargetModule.Gate, s.H2, dG, _dH);
        layer.Up.InputGrad(dU, _dH, beta: 1);
        lora.LinearBackward(l, TargetModule.Up, s.H2, dU, _dH);
        if (_dHx != null) BasicOps.Add(_dH, _dHx, _dH);
        RmsNorm.Backward(s.XMid, layer.FfnNorm, _dH, _dX, eps, accumulate: true);

        // Attention block: x_mid = x_in + adapter(o_proj(attention(rope(q(h1)), rope(k(h1)), v(h1)))).
        dz = _dX;
        if (_dZ != null)
        {
            lora.AttentionOutputBackward(l, _dX, _dZ);
            dz = _dZ;
        }
        layer.Wo.InputGrad(dz, _dO);
        lora.LinearBackward(l, TargetModule.O, s.O, dz, _dO);
        var lse = LayerForward.LseView(s, Batch, SeqLen, c.NHeads);
        Attention.Backward(s.Q, s.K, s.V, s.O, lse, _dO, _dQ, _dK, _dV, _delta, Batch, SeqLen, 0, c.NHeads, c.NKvHeads, c.HeadDim);
        Rope.Apply(_dQ, _dQ, _model.InvFreq, c.HeadDim, _model.Pairing, 0, SeqLen, inverse: true);
        Rope.Apply(_dK, _dK, _model.InvFreq, c.HeadDim, _model.Pairing, 0, SeqLen, inverse: true);
        layer.Wq.InputGrad(_dQ, _dH);
        lora.LinearBackward(l, TargetModule.Q, s.H1, _dQ, _dH);
        layer.Wk.InputGrad(_dK, _dH, beta: 1);
        lora.LinearBackward(l, TargetModule.K, s.H1, _dK, _dH);
        layer.Wv.InputGrad(_dV, _dH, beta: 1);
        lora.LinearBackward(l, TargetModule.V, s.H1, _dV, _dH);
        RmsNorm.Backward(xIn, layer.AttnNorm, _dH, _dX, eps, accumulate: true);
    }

    public void Dispose()
    {
        foreach (var s in _states) s.Dispose();
        foreach (var t in _owned) t.Dispose();
    }
}
