// Bias and norm tuning (BitFit-style on Llama). `--method bias`: a trainable bias [out] added to the output of each
// --targets linear (default all seven; Llama has none, so the adapter adds them), zero-initialized so training starts
// from the base; `--norms` also tunes the RMSNorm weights. `--method norm`: the RMSNorm weights only (each layer's
// attention and MLP norms and the final norm). A tuned norm is stored as its change from the base's weight (`.delta`,
// zero at start): the weight applied is base + delta, and AdamW's weight decay pulls it toward the base rather than
// toward zero. PEFT has no adapter type holding both (its BEFT type adds v_proj-style biases, LN_TUNING copies the norm
// weights); vkpeft saves its own format. Merged exports add the deltas to the norms and write the biases as the model's
// own bias tensors (Hugging Face attention_bias/mlp_bias, GGUF attn_*.bias/ffn_*.bias); llama2.c files hold no biases.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods.BiasNorm;

/// <summary>Bias tuning's own knob: whether the RMSNorm weights train too (always for --method norm).</summary>
public sealed record BiasNormSettings(bool Norms) : MethodSettings;

public sealed class BiasNormMethod : PeftMethod
{
    private readonly bool _normOnly;

    private BiasNormMethod(bool normOnly) { _normOnly = normOnly; }

    /// <summary>`--method bias`: biases on the targets, optionally the norms too.</summary>
    public static readonly BiasNormMethod Bias = new(normOnly: false);

    /// <summary>`--method norm`: the RMSNorm weights (and biases only on targets listed explicitly).</summary>
    public static readonly BiasNormMethod Norm = new(normOnly: true);

    public override string Name => _normOnly ? "norm" : "bias";

    public override IReadOnlyList<string> Aliases => _normOnly ? ["ln-tuning"] : ["bitfit"];

    /// <summary>Norm tuning adapts no linear unless --targets says so; bias tuning every linear.</summary>
    public override TargetModule[]? DefaultTrainTargets => _normOnly ? [] : null;

    public override TargetModule[] TargetsWhenUnlisted => _normOnly ? [] : Enum.GetValues<TargetModule>();

    /// <summary>Whether the RMSNorm weights of <paramref name="a"/> are tuned.</summary>
    public bool TrainsNorms(AdapterConfig a) => _normOnly || a.Settings is BiasNormSettings { Norms: true };

    /// <summary>Canonical name of a target's bias: <c>layers.{i}.{t}.bias</c> [out].</summary>
    public static string BiasName(int layer, TargetModule t) => $"layers.{layer}.{AdapterWeights.TargetName(t)}.bias";

    /// <summary>
    /// Canonical name of a norm's change from the base weight: <c>layers.{i}.attn_norm.delta</c>,
    /// <c>layers.{i}.ffn_norm.delta</c>, <c>final_norm.delta</c> (layer −1), each [dim].
    /// </summary>
    public static string NormName(int layer, LlamaTensorKind norm) => norm switch
    {
        LlamaTensorKind.AttnNorm => $"layers.{layer}.attn_norm.delta",
        LlamaTensorKind.FfnNorm => $"layers.{layer}.ffn_norm.delta",
        LlamaTensorKind.FinalNorm => "final_norm.delta",
        _ => throw new ArgumentOutOfRangeException(nameof(norm), $"{norm} is not an RMSNorm weight"),
    };

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        if (a.Targets.Length == 0 && !TrainsNorms(a)) throw new SettingException($"{AdapterSettings.Targets}: bias tuning needs at least one target (or {NormsOption.Flag})");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        if (a.Targets.Length == 0 && !TrainsNorms(a)) throw new ModelFormatException(source, "target_modules", "bias tuning needs at least one target or train_norms");
        foreach (var t in a.Targets.Where(t => baseConfig.HasBias(t)))
            throw new ModelFormatException(source, "target_modules", $"this base already has a {AdapterConfig.HfName(t)} bias; bias tuning adds biases to bias-free linears only");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a) => w.WriteBoolean("train_norms", TrainsNorms(a));

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common)
    {
        bool norms = _normOnly;
        if (root.TryGetProperty("train_norms", out var n))
        {
            if (n.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new ModelFormatException(file, "train_norms", "must be true or false");
            norms = n.GetBoolean();
            if (_normOnly && !norms) throw new ModelFormatException(file, "train_norms", "a norm adapter always trains the norms");
        }
        return common with { Settings = new BiasNormSettings(norms) };
    }

    public override string PeftUnsupportedReason =>
        "PEFT folders cannot hold bias/norm tuning (PEFT's BEFT and LN_TUNING types each hold one half, in other layouts); use the vkpeft adapter format or export a merged model";

    public override string GgufLoraUnsupportedReason =>
        "GGUF LoRA files cannot hold bias/norm tuning (llama.cpp's LoRA loader takes lora_a/lora_b only and skips norm tensors); export a merged model instead";

    /// <summary>Per layer: a zero bias [out] per target (q/k rows follow the base's RoPE layout), then the two norm deltas [dim]; then the final norm's.</summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var list = new List<ParameterSpec>();
        bool norms = TrainsNorms(a);
        for (int l = 0; l < c.NLayers; l++)
        {
            foreach (var t in Enum.GetValues<TargetModule>().Where(a.Targets.Contains))
                list.Add(new ParameterSpec(BiasName(l, t), [c.LinearShape(t).Out], new ParameterInit.Zeros(), OutputRowsOf: t));
            if (!norms) continue;
            list.Add(new ParameterSpec(NormName(l, LlamaTensorKind.AttnNorm), [c.Dim], new ParameterInit.Zeros()));
            list.Add(new ParameterSpec(NormName(l, LlamaTensorKind.FfnNorm), [c.Dim], new ParameterInit.Zeros()));
        }
        if (norms) list.Add(new ParameterSpec(NormName(-1, LlamaTensorKind.FinalNorm), [c.Dim], new ParameterInit.Zeros()));
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new BiasNormRuntime(ctx, c, a, TrainsNorms(a), p, maxRows);

    /// <summary>The linear weights are unchanged; the biases and norms merge as tensors of their own (<see cref="MergeOther"/>).</summary>
    public override double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight) => null;

    /// <summary>
    /// The effective norm weights (base + delta, summed in float64 and rounded once) and the biases as the model's own
    /// bias tensors. Formats hold biases per group — Hugging Face Llama's attention_bias (q, k, v, o) and mlp_bias (gate,
    /// up, down) — so the untuned members of a group with a tuned one get zero biases.
    /// </summary>
    public override MergedModel MergeOther(MergedModel merged, AdapterWeights adapter)
    {
        var (c, w, a) = (merged.Config, merged.Weights, adapter.Config);
        bool norms = TrainsNorms(a);
        bool attn = a.Targets.Any(t => t is TargetModule.Q or TargetModule.K or TargetModule.V or TargetModule.O);
        bool mlp = a.Targets.Any(t => t is TargetModule.Gate or TargetModule.Up or TargetModule.Down);
        float[] Norm(float[] baseW, int layer, LlamaTensorKind kind)
        {
            if (!norms) return baseW;
            var d = adapter.Tensors[NormName(layer, kind)].Data;
            var r = new float[baseW.Length];
            for (int i = 0; i < r.Length; i++) r[i] = (float)((double)baseW[i] + d[i]);
            return r;
        }
        float[]? Bias(int layer, TargetModule t, float[]? existing, bool group) =>
            a.Targets.Contains(t) ? (float[])adapter.Tensors[BiasName(layer, t)].Data.Clone()
                : existing ?? (group ? new float[c.LinearShape(t).Out] : null);
        var layers = w.Layers.Select((lw, l) => new LlamaLayerWeights
        {
            AttnNorm = Norm(lw.AttnNorm, l, LlamaTensorKind.AttnNorm),
            FfnNorm = Norm(lw.FfnNorm, l, LlamaTensorKind.FfnNorm),
            Wq = lw.Wq, Wk = lw.Wk, Wv = lw.Wv, Wo = lw.Wo, WGate = lw.WGate, WUp = lw.WUp, WDown = lw.WDown,
            Bq = Bias(l, TargetModule.Q, lw.Bq, attn),
            Bk = Bias(l, TargetModule.K, lw.Bk, attn),
            Bv = Bias(l, TargetModule.V, lw.Bv, attn),
            Bo = Bias(l, TargetModule.O, lw.Bo, attn),
            BGate = Bias(l, TargetModule.Gate, lw.BGate, mlp),
            BUp = Bias(l, TargetModule.Up, lw.BUp, mlp),
            BDown = Bias(l, TargetModule.Down, lw.BDown, mlp),
        }).ToArray();
        var weights = new LlamaWeights
        {
            TokenEmbedding = w.TokenEmbedding, Layers = layers, FinalNorm = Norm(w.FinalNorm, -1, LlamaTensorKind.FinalNorm),
            Classifier = w.Classifier, RopeFreqFactors = w.RopeFreqFactors,
        };
        var config = c with { AttentionBias = c.AttentionBias || attn, OutputBias = c.OutputBias || attn, MlpBias = c.MlpBias || mlp };
        return merged with { Config = config, Weights = weights };
    }

    /// <summary>The tuned-norm scratch: rstd [rows] and the effective weights (2·layers + 1)·[dim].</summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        if (!TrainsNorms(ConfigFor(s))) yield break;
        yield return new MethodMemoryTerm("tuned-norm rstd", MemoryCategory.Workspace, MemoryModel.F32(rows));
        yield return new MethodMemoryTerm("effective norm weights", MemoryCategory.Workspace, (2L * s.Config.NLayers + 1) * MemoryModel.F32(s.Config.Dim));
    }

    /// <summary>Bias tuning on the setup's targets; norm tuning on the norms alone.</summary>
    public override AdapterConfig ConfigFor(TrainSetup s) =>
        base.ConfigFor(s) with { Targets = _normOnly ? [] : s.Targets, Settings = new BiasNormSettings(_normOnly) };

    public static readonly MethodOption NormsOption =
        new("--norms", "Bias tuning: also tune the RMSNorm weights", null, (a, v) => a with
        {
            Settings = new BiasNormSettings(string.Equals(v, bool.TrueString, StringComparison.OrdinalIgnoreCase)),
        });

    private static readonly MethodOption[] BiasOptions = [NormsOption];

    public override IReadOnlyList<MethodOption> Options => _normOnly ? [] : BiasOptions;
}
