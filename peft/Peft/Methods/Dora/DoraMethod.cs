// DoRA (`--method lora --dora`): LoRA plus a trainable magnitude per output row of each targeted linear,
// y = (m / n) ⊙ (W0·x + s·B·A·x) with n = ‖W0 + s·B·A‖ per output row, treated as a constant in backward (detached, as
// PEFT does). m starts at the base's row norms, so a fresh adapter (B = 0) is the base model. Saved in PEFT's LORA form
// with use_dora and lora_magnitude_vector tensors; mergeable (W' = (m/n)·(W0 + ΔW)); llama.cpp has no DoRA adapter type.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.Dora;

public sealed class DoraMethod : LoraMethod
{
    public override string Name => "dora";

    /// <summary>Canonical name of a target's magnitude vector: <c>layers.{i}.{t}.lora_magnitude</c> [out].</summary>
    public static string MagnitudeName(int layer, TargetModule t) => $"layers.{layer}.{AdapterWeights.TargetName(t)}.lora_magnitude";

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        base.ValidateOptions(a, quant);
        if (a.SettingsOf<LoraSettings>().Dropout is > 0 and var p)
            throw new FormatException($"{DropoutOption.Flag} {p}: DoRA here has no dropout (PEFT's DoRA dropout recomputes the base on the dropped-out input, a second full base matmul); use {DropoutOption.Flag} 0");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        base.ValidateConfig(a, baseConfig, source);
        if (baseConfig.AttentionBias)
            foreach (var t in a.Targets.Where(t => t is TargetModule.Q or TargetModule.K or TargetModule.V))
                throw new ModelFormatException(source, "target_modules", $"DoRA on {AdapterConfig.HfName(t)} would rescale its bias too; this base has q/k/v biases");
    }

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold DoRA (llama.cpp cannot apply lora_magnitude_vector, ggml-org/llama.cpp#6536); export a merged model instead (--format gguf)";

    /// <summary>LoRA's tensors plus, per layer and target, the magnitude m [out], starting at the base's row norms.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var list = new List<ParameterSpec>(base.Parameters(c, a));
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in a.Targets)
                list.Add(new ParameterSpec(MagnitudeName(l, t), [c.LinearShape(t).Out], new ParameterInit.BaseRowNorms(l, t), OutputRowsOf: t));
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new DoraRuntime(ctx, c, a, p, maxRows);

    /// <summary>
    /// ΔW = (m/n)·(W0 + s·B·A) − W0 in float64, n the row norms of W0 + s·B·A for the base weight <paramref name="baseWeight"/>
    /// given (the dequantized one the adapter was trained on, unless the export merges into the original).
    /// </summary>
    public override double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight)
    {
        if (!adapter.Config.Targets.Contains(t)) return null;
        var (outF, inF) = c.LinearShape(t);
        var delta = Delta(adapter, c, layer, t);
        var m = adapter.Tensors[MagnitudeName(layer, t)].Data;
        for (int j = 0; j < outF; j++)
        {
            double sum = 0;
            for (int i = 0; i < inF; i++)
            {
                double v = baseWeight[j * inF + i] + delta[j * inF + i];
                sum += v * v;
            }
            double scale = m[j] / Math.Sqrt(sum);
            for (int i = 0; i < inF; i++)
            {
                double w0 = baseWeight[j * inF + i];
                delta[j * inF + i] = scale * (w0 + delta[j * inF + i]) - w0;
            }
        }
        return delta;
    }

    /// <summary>DoRA has no plain-LoRA form (the magnitude rescales the base rows too).</summary>
    public override AdapterWeights? AsPlainLora(AdapterWeights adapter, LlamaConfig c, ICollection<string>? notes) => null;

    /// <summary>
    /// LoRA's scratch plus DoRA's: per layer and target ‖W0_j‖², m/n and 1/n; the scaled output gradient [rows, widest
    /// target output] and the pre-scale output recomputed a chunk of rows at a time [chunk, widest output]; A·W0ᵀ
    /// [r, widest output], A·Aᵀ [r, r] and B·A·Aᵀ [widest output, r].
    /// </summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        foreach (var t in base.WorkspaceTerms(s, rows)) yield return t;
        var a = ConfigFor(s);
        long r = a.SettingsOf<LoraSettings>().Rank;
        yield return new MethodMemoryTerm("DoRA row norms and scales", MemoryCategory.Workspace, MemoryModel.F32(3 * DoraRuntime.NormRows(s.Config, a)));
        long maxOut = DoraRuntime.MaxOut(s.Config, a);
        yield return new MethodMemoryTerm("DoRA scratch", MemoryCategory.Workspace,
            MemoryModel.F32(rows * maxOut) + MemoryModel.F32(DoraRuntime.ChunkRows(rows) * maxOut) + 2 * MemoryModel.F32(r * maxOut)
            + MemoryModel.F32(r * r));
    }
}
