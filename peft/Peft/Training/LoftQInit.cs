// `train --init loftq --loftq-iters k`: LoftQ initialization of every LoRA target of a model (VkPeft.Quant.LoftQ with
// the runtime's own quantizer for the base's format), giving the backbone to load and train (its targeted linears are
// the weights whose quantization is LoftQ's Q, bit for bit) and the initial A and B, with ‖W − (Q + s·B·A)‖ per linear
// before (the plain quantized base, B = 0) and after. The scaling s = alpha / r (or alpha / √r) is divided out of the
// SVD factors, so the approximation holds for any alpha (PEFT's loftq_init leaves s out and is exact only when s = 1).
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Quant;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>‖W − (Q + s·B·A)‖_F of one linear: the plain quantized base (before) and after each LoftQ iteration; ‖W‖_F.</summary>
public sealed record LoftQLinearError(int Layer, TargetModule Kind, double WeightNorm, double Before, double[] Iterations)
{
    public double After => Iterations[^1];
}

/// <summary>A LoftQ-initialized run: the model to load, the adapter to start from and the errors.</summary>
public sealed record LoftQStart(LoadedModel Backbone, AdapterWeights Adapter, IReadOnlyList<LoftQLinearError> Errors)
{
    public double TotalBefore => Math.Sqrt(Errors.Sum(e => e.Before * e.Before));
    public double TotalAfter => Math.Sqrt(Errors.Sum(e => e.After * e.After));

    public JsonObject ToJson(int iterations) => new()
    {
        ["iterations"] = iterations,
        ["error_before"] = TotalBefore,
        ["error_after"] = TotalAfter,
        ["linears"] = new JsonArray([.. Errors.Select(e => (JsonNode)new JsonObject
        {
            ["layer"] = e.Layer,
            ["target"] = AdapterWeights.TargetName(e.Kind),
            ["weight_norm"] = e.WeightNorm,
            ["error_before"] = e.Before,
            ["error_after"] = e.After,
            ["error_per_iteration"] = new JsonArray([.. e.Iterations.Select(x => (JsonNode)x)]),
        })]),
    };

    /// <summary>One log line per layer: the summed error of its targets before → after.</summary>
    public IEnumerable<string> LogLines() => Errors.GroupBy(e => e.Layer).Select(g => string.Create(CultureInfo.InvariantCulture,
        $"LoftQ layer {g.Key}: ‖W − (Q + s·B·A)‖ {Math.Sqrt(g.Sum(e => e.Before * e.Before)):G4} → {Math.Sqrt(g.Sum(e => e.After * e.After)):G4} ({string.Join(", ", g.Select(e => $"{AdapterWeights.TargetName(e.Kind)} {e.Before:G3} → {e.After:G3}"))})"));
}

public static class LoftQInit
{
    /// <summary>Refuses, with the option named, a LoftQ request the method or base cannot take.</summary>
    public static void Validate(int iterations, AdapterConfig adapter, BaseQuant quant)
    {
        if (iterations < 1) throw new SettingException($"{TrainSettings.LoftQIterations} must be ≥ 1, got {iterations}");
        if (adapter.Method != PeftMethod.Lora)
            throw new SettingException($"{TrainSettings.LoftQ} initializes a low-rank update: it needs {AdapterSettings.Method} lora, not {adapter.Method.CliName}");
        if (!quant.IsQuantized || quant.IsInt4)
            throw new SettingException($"{TrainSettings.LoftQ} corrects the NF4/FP4 quantization error of the base: use {EngineSettings.Quant} nf4, nf4-dq, fp4 or fp4-dq, not {quant.Type}");
    }

    /// <summary>
    /// LoftQ for every target of <paramref name="adapter"/> (k alternations each), from the full-precision weights of
    /// <paramref name="host"/>. Deterministic for a seed: a resumed run recomputes the same backbone.
    /// </summary>
    public static LoftQStart Apply(LoadedModel host, AdapterConfig adapter, BaseQuant quant, int iterations, int seed, Action<int, int>? progress = null)
    {
        Validate(iterations, adapter, quant);
        var c = host.Config;
        var init = new AdapterWeights(adapter);
        var errors = new List<LoftQLinearError>();
        var backboneInputs = new Dictionary<(int, TargetModule), float[]>();
        int done = 0, total = c.NLayers * adapter.Targets.Length;
        var lora = adapter.SettingsOf<LoraSettings>();
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in adapter.Targets)
            {
                var (outF, inF) = c.LinearShape(t);
                var w = ModelTensors.Linear(host.Weights.Layers[l], t);
                string name = $"layers.{l}.{AdapterWeights.TargetName(t)}";
                var r = LoftQ.Initialize(w, outF, inF, lora.Rank, lora.Scaling, iterations,
                    x => AdapterMerge.TrainedBase(quant, x, outF, inF, name), unchecked(seed * 7919 + l * 31 + (int)t));
                backboneInputs[(l, t)] = r.BackboneInput;
                init.Tensors[AdapterWeights.LoraA(l, t)] = new HostTensor(r.A, [lora.Rank, inF]);
                init.Tensors[AdapterWeights.LoraB(l, t)] = new HostTensor(r.B, [outF, lora.Rank]);
                errors.Add(new LoftQLinearError(l, t, LoftQ.Distance(w, new float[w.Length], null), r.ErrorBefore, r.Errors));
                progress?.Invoke(++done, total);
            }
        var weights = ModelTensors.WithLinears(host.Weights, (l, t, w) => backboneInputs.TryGetValue((l, t), out var b) ? b : w);
        return new LoftQStart(host with { Weights = weights }, init, errors);
    }

    /// <summary>
    /// Writes the LoftQ backbone into <c>outDir/loftq-backbone/</c> (Hugging Face safetensors, f32): the weights whose
    /// quantization with the run's --quant is the base the adapter was trained on (the export default --merge-from
    /// dequantized merges into exactly that base). Returns the folder.
    /// </summary>
    public static string WriteBackbone(LoftQStart start, string outDir)
    {
        string path = Path.Combine(outDir, "loftq-backbone");
        Directory.CreateDirectory(outDir);
        Exporter.Export(start.Backbone, null, new ExportOptions { Format = ExportFormat.Safetensors, MergeFrom = MergeFrom.Original, OutPath = path, Force = true });
        return path;
    }
}
