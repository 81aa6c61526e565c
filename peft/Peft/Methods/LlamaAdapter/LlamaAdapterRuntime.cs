// LLaMA-Adapter's device runtime: the adaption-prompt hook of the attention block. Prompt keys/values K = P·Wkᵀ,
// V = P·Wvᵀ (+ the base's k/v bias) come from the frozen 4-bit weights; they are recomputed at every forward in training
// (the prompts change every step) and computed once and kept otherwise (evaluation, generation: not per token). Nothing
// of the prompt attention is kept per layer: the backward recomputes its probabilities and ungated output (2·rows·heads·
// P·hd multiply-adds, small beside the layer) instead of holding [rows, q_dim] per adapted layer, then adds the queries'
// gradient to dq and sends the keys'/values' gradients back through the frozen projections into the prompt
// (dP += dK·Wk + dV·Wv: input gradients only).
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using PromptKernels = VkPeft.Runtime.Kernels.AdaptionPrompt;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.LlamaAdapter;

public sealed class LlamaAdapterRuntime : ITrainableAdapter, IAdaptionPromptHook, IDisposable
{
    private readonly LlamaConfig _c;
    private readonly TrainableParameters _p;
    private readonly int _firstLayer, _promptLen;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor[] _keys, _values;      // per adapted layer [P, kv_dim]
    private readonly bool[] _fresh;                      // per adapted layer: keys/values match the current prompt
    private readonly DeviceTensor _probs, _ungated;      // [maxRows, n_heads·P], [maxRows, q_dim] (recomputed in backward)
    private readonly DeviceTensor _output;               // [maxRows, q_dim] what the o-projection reads
    private readonly DeviceTensor? _dScores, _rowDots, _dKeys, _dValues, _dGate;   // backward scratch (training)
    private bool _training;

    /// <summary>
    /// Workspace elements in training: probabilities and score gradients [rows, n_heads·P], the ungated and gated outputs
    /// [rows, q_dim], row dots [rows, n_heads], prompt keys and values per adapted layer and their gradients [P, kv_dim],
    /// and the gate gradient.
    /// </summary>
    public static long WorkspaceElements(LlamaConfig c, AdapterConfig a, long rows)
    {
        long p = LlamaAdapterMethod.Settings(a).AdapterLen;
        return 2 * rows * c.NHeads * p + 2 * rows * c.QDim + rows * c.NHeads
            + 2L * LlamaAdapterMethod.AdaptedLayers(a, c.NLayers) * p * c.KvDim + 2 * p * c.KvDim + 1;
    }

    public LlamaAdapterRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows)
    {
        _c = c;
        _p = p;
        _firstLayer = LlamaAdapterMethod.FirstLayer(a, c.NLayers);
        _promptLen = LlamaAdapterMethod.Settings(a).AdapterLen;
        int adapted = c.NLayers - _firstLayer;
        using var scope = new TensorScope();
        DeviceTensor T(string name, MemoryCategory category, params long[] shape) =>
            scope.Add(DeviceTensor.Create(ctx, name, DType.F32, shape, category));
        _keys = [.. Enumerable.Range(0, adapted).Select(i => T($"llama_adapter.keys.{_firstLayer + i}", MemoryCategory.Workspace, _promptLen, c.KvDim))];
        _values = [.. Enumerable.Range(0, adapted).Select(i => T($"llama_adapter.values.{_firstLayer + i}", MemoryCategory.Workspace, _promptLen, c.KvDim))];
        _fresh = new bool[adapted];
        _probs = T("llama_adapter.probs", MemoryCategory.Workspace, maxRows, (long)c.NHeads * _promptLen);
        _ungated = T("llama_adapter.ungated", MemoryCategory.Workspace, maxRows, c.QDim);
        _output = T("llama_adapter.output", MemoryCategory.Workspace, maxRows, c.QDim);
        if (p.WithOptimizer)
        {
            _dScores = T("llama_adapter.d_scores", MemoryCategory.Workspace, maxRows, (long)c.NHeads * _promptLen);
            _rowDots = T("llama_adapter.row_dots", MemoryCategory.Workspace, maxRows, c.NHeads);
            _dKeys = T("llama_adapter.d_keys", MemoryCategory.Workspace, _promptLen, c.KvDim);
            _dValues = T("llama_adapter.d_values", MemoryCategory.Workspace, _promptLen, c.KvDim);
            _dGate = T("llama_adapter.d_gate", MemoryCategory.Workspace, 1);
        }
        _owned = scope.Keep();
    }

    /// <summary>Switching mode (a training step, an evaluation) makes the prompt keys/values be recomputed from the prompts.</summary>
    public bool Training
    {
        get => _training;
        set
        {
            _training = value;
            Array.Fill(_fresh, false);
        }
    }

    public uint StepSeed { get; set; }

    public IAdaptionPromptHook AdaptionPrompt => this;

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y) { }

    private TrainableTensor Prompt(int layer) => _p.ByName[LlamaAdapterMethod.PromptName(layer)];

    private TrainableTensor Gate(int layer) => _p.ByName[LlamaAdapterMethod.GateName(layer)];

    /// <summary>[rows, cols] view of the first rows of a [maxRows, cols] buffer.</summary>
    private static DeviceTensor Rows(DeviceTensor t, long rows) => t.Rows == rows ? t : t.RowsView(0, rows);

    public DeviceTensor Forward(DeviceLayer weights, int layer, DeviceTensor q, DeviceTensor o)
    {
        if (layer < _firstLayer) return o;
        int i = layer - _firstLayer;
        if (_training || !_fresh[i])
        {
            // K = P·Wkᵀ (+ b_k), V = P·Wvᵀ (+ b_v): the frozen projections, no RoPE.
            var prompt = Prompt(layer).Param.Reshape(_promptLen, _c.Dim);
            weights.Wk.Forward(prompt, _keys[i]);
            if (weights.Bk != null) Bias.Add(_keys[i], weights.Bk);
            weights.Wv.Forward(prompt, _values[i]);
            if (weights.Bv != null) Bias.Add(_values[i], weights.Bv);
            _fresh[i] = true;
        }
        var output = Rows(_output, q.Rows);
        PromptKernels.Forward(q, _keys[i], _values[i], Gate(layer).Param, o, Rows(_probs, q.Rows), Rows(_ungated, q.Rows), output,
            _c.NHeads, _c.NKvHeads, _c.HeadDim);
        return output;
    }

    public void Backward(DeviceLayer weights, int layer, DeviceTensor q, DeviceTensor dOutput, DeviceTensor dq)
    {
        if (layer < _firstLayer) return;
        int i = layer - _firstLayer;
        long rows = q.Rows;
        var gate = Gate(layer);
        var (probs, ungated) = (Rows(_probs, rows), Rows(_ungated, rows));
        // Recompute the probabilities and the ungated output (the keys/values are this step's). The kernel also forms a
        // gated sum, here of dOutput, into the output scratch: unused.
        PromptKernels.Forward(q, _keys[i], _values[i], gate.Param, dOutput, probs, ungated, Rows(_output, rows), _c.NHeads, _c.NKvHeads, _c.HeadDim);
        PromptKernels.Backward(q, _keys[i], _values[i], gate.Param, probs, ungated, dOutput,
            Rows(_dScores!, rows), Rows(_rowDots!, rows), dq, _dKeys!, _dValues!, _dGate!, _c.NHeads, _c.NKvHeads, _c.HeadDim);
        BasicOps.Add(gate.Grad!, _dGate!, gate.Grad!);
        // dP += dK·Wk + dV·Wv: input gradients through the frozen 4-bit projections.
        var dPrompt = Prompt(layer).Grad!.Reshape(_promptLen, _c.Dim);
        weights.Wk.InputGrad(_dKeys!, dPrompt, beta: 1);
        weights.Wv.InputGrad(_dValues!, dPrompt, beta: 1);
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
