// Bias and norm tuning on the device. Bias at a target: y += b after the base linear (before RoPE for q and k, as a
// Hugging Face q_proj/k_proj bias); backward ∂b += Σ_rows dy (the deterministic column sum), no input gradient of its
// own. Tuned norm: the weight applied is base + delta, formed into an effective-weight buffer at each use; backward
// dx (+)= RMSNorm input gradient through that weight (writing rstd [rows]) and ∂delta += Σ_rows dh ⊙ x·rstd.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.BiasNorm;

public sealed class BiasNormRuntime : ITrainableAdapter, IDisposable
{
    private readonly AdapterConfig _config;
    private readonly bool _norms;
    private readonly TrainableParameters _p;
    private readonly IReadOnlyList<IDisposable> _owned;
    private readonly DeviceTensor? _rstd;                                             // [maxRows]
    private readonly Dictionary<(int Layer, LlamaTensorKind Norm), DeviceTensor> _effective = [];   // [dim] base + delta

    public BiasNormRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, bool norms, TrainableParameters p, int maxRows)
    {
        _config = a;
        _norms = norms;
        _p = p;
        using var scope = new TensorScope();
        if (norms)
        {
            _rstd = scope.Add(DeviceTensor.Create(ctx, "norm_tuning.rstd", DType.F32, [maxRows], MemoryCategory.Workspace));
            DeviceTensor Effective(string name) => scope.Add(DeviceTensor.Create(ctx, name, DType.F32, [c.Dim], MemoryCategory.Workspace));
            for (int l = 0; l < c.NLayers; l++)
            {
                _effective[(l, LlamaTensorKind.AttnNorm)] = Effective($"norm_tuning.{l}.attn_norm");
                _effective[(l, LlamaTensorKind.FfnNorm)] = Effective($"norm_tuning.{l}.ffn_norm");
            }
            _effective[(-1, LlamaTensorKind.FinalNorm)] = Effective("norm_tuning.final_norm");
        }
        _owned = scope.Keep();
    }

    public bool Training { get; set; }
    public uint StepSeed { get; set; }

    private TrainableTensor Param(string name) => _p.ByName[name];

    public void Linear(int layer, TargetModule target, DeviceTensor x, DeviceTensor y)
    {
        if (_config.Targets.Contains(target)) Bias.Add(y, Param(BiasNormMethod.BiasName(layer, target)).Param);
    }

    public bool LinearBackward(int layer, TargetModule target, DeviceTensor x, DeviceTensor dy, DeviceTensor dx, bool overwriteDx = false)
    {
        if (_config.Targets.Contains(target)) Bias.Grad(dy, Param(BiasNormMethod.BiasName(layer, target)).Grad!, accumulate: true);
        return false;   // a bias adds nothing to ∂loss/∂x
    }

    public DeviceTensor NormWeight(int layer, LlamaTensorKind norm, DeviceTensor baseWeight)
    {
        if (!_norms) return baseWeight;
        var effective = _effective[(layer, norm)];
        BasicOps.Add(baseWeight, Param(BiasNormMethod.NormName(layer, norm)).Param, effective);
        return effective;
    }

    /// <summary>The effective weight was formed by the forward that the backward follows (the parameters do not change in between).</summary>
    public bool NormBackward(int layer, LlamaTensorKind norm, DeviceTensor x, DeviceTensor dh, DeviceTensor dx, float eps, bool accumulate)
    {
        if (!_norms) return false;
        var rstd = _rstd!.RowsView(0, x.Rows);
        RmsNorm.Backward(x, _effective[(layer, norm)], dh, dx, eps, accumulate, rstd);
        RmsNorm.AccumulateWeightGrad(x, dh, rstd, Param(BiasNormMethod.NormName(layer, norm)).Grad!);
        return true;
    }

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
    }
}
