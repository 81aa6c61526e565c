// The export entry point the CLI calls: validates the format/dtype/adapter combination, merges (dense, or the
// lossless QA-LoRA INT4 merge), writes atomically through the format writers and returns an ExportReport.
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;

namespace VkPeft.Peft.Export;

public static class Exporter
{
    /// <summary>
    /// Exports <paramref name="model"/> (with <paramref name="adapter"/> merged, for model formats) or the adapter
    /// itself (Peft, VkPeft, GgufLora). Model formats and dtypes: Safetensors f32/f16/bf16/nf4/nf4-dq/int4;
    /// Gguf f32/f16/bf16/q8_0/q4_0/q4_1; Llama2c f32. A QA-LoRA adapter on an int4 base exported as Safetensors int4,
    /// or as Gguf q4_1 with g = 32, is merged losslessly (only the group mins shift). Bottleneck adapters cannot be
    /// merged. The output is written under a temporary name and renamed; an existing output needs Force.
    /// </summary>
    public static ExportReport Export(LoadedModel model, AdapterWeights? adapter, ExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var o = options;
        AtomicOutput.CheckTarget(Path.GetFullPath(o.OutPath), o.Force);
        var report = new ExportReport { OutPath = Path.GetFullPath(o.OutPath), Format = o.Format, DType = ExportOptions.DTypeName(o.DType) };

        switch (o.Format)
        {
            case ExportFormat.Peft:
                {
                    var a = RequireAdapter(adapter, o.Format);
                    string dtype = o.DType switch
                    {
                        ExportDType.F32 => "F32",
                        ExportDType.F16 => "F16",
                        ExportDType.BF16 => "BF16",
                        _ => throw new ExportException($"PEFT adapters are stored as f32, f16 or bf16, not {ExportOptions.DTypeName(o.DType)}"),
                    };
                    return AdapterIO.SavePeft(o.OutPath, a, model.Config, o.Force, dtype);
                }
            case ExportFormat.VkPeft:
                {
                    var a = RequireAdapter(adapter, o.Format);
                    if (o.DType != ExportDType.F32) throw new ExportException("vkpeft adapters are stored as f32");
                    return AdapterIO.SaveVkPeft(o.OutPath, a, model.Config, o.Force);
                }
            case ExportFormat.GgufLora:
                {
                    var a = RequireAdapter(adapter, o.Format);
                    if (o.DType != ExportDType.F32) throw new ExportException("GGUF LoRA adapters are written as f32");
                    AtomicOutput.WriteFile(o.OutPath, o.Force, tmp => ModelWriters.WriteGgufLora(tmp, a, model.Config, o, report));
                    report.Files.Add(report.OutPath);
                    return report;
                }
        }

        CheckModelDType(o);
        var merged = Merge(model, adapter, o, report);
        switch (o.Format)
        {
            case ExportFormat.Safetensors:
                AtomicOutput.WriteDirectory(o.OutPath, o.Force, tmp => ModelWriters.WriteHf(tmp, merged, model, o, report));
                break;
            case ExportFormat.Gguf:
                AtomicOutput.WriteFile(o.OutPath, o.Force, tmp => ModelWriters.WriteGguf(tmp, merged, model, o, report));
                report.Files.Add(report.OutPath);
                break;
            case ExportFormat.Llama2c:
                AtomicOutput.WriteFile(o.OutPath, o.Force, tmp => ModelWriters.WriteLlama2c(tmp, merged, model, o, report));
                report.Files.Add(report.OutPath);
                ModelWriters.WriteLlama2cTokenizer(o.OutPath, model, o.Force, report);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(options), o.Format, "unknown export format");
        }
        return report;
    }

    /// <summary>The merged model an export writes (exposed for callers that evaluate it before writing).</summary>
    public static MergedModel Merge(LoadedModel model, AdapterWeights? adapter, ExportOptions options, ExportReport? report = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (adapter is null)
        {
            if (options.MergeFrom != MergeFrom.Dequantized || options.DequantizeBase is not { } q || q.Type == "none")
                return new MergedModel(model.Config, model.Weights);
            report?.Notes.Add($"no adapter: the base dequantized from {q.Type} (blocksize {q.Blocksize}), the base an adapter trained on it pairs with");
            var config = model.Config;
            return new MergedModel(config, ModelTensors.WithLinears(model.Weights, (layer, t, w) =>
            {
                var (outF, inF) = config.LinearShape(t);
                return AdapterMerge.TrainedBase(q, w, outF, inF, $"layers.{layer}.{AdapterWeights.TargetName(t)}");
            }));
        }
        var cfg = adapter.Config;
        if (cfg.Method.NotMergeableReason is { } why) throw new ExportException(why);
        if (cfg.Method.LosslessMerge(model.Config, model.Weights, adapter, options.Format, options.DType, options.MergeFrom, report?.Notes) is { } lossless)
            return lossless;
        report?.Notes.Add(options.MergeFrom == MergeFrom.Dequantized
            ? $"adapter merged into the base it was trained against ({cfg.BaseQuant.Type}, blocksize {cfg.BaseQuant.Blocksize}, dequantized)"
            : "adapter merged into the original base weights");
        return AdapterMerge.MergeDense(model.Config, model.Weights, adapter, options.MergeFrom);
    }

    private static AdapterWeights RequireAdapter(AdapterWeights? adapter, ExportFormat format) =>
        adapter ?? throw new ExportException($"format {format} writes an adapter; none was given");

    private static void CheckModelDType(ExportOptions o)
    {
        bool ok = o.Format switch
        {
            ExportFormat.Safetensors => o.DType is ExportDType.F32 or ExportDType.F16 or ExportDType.BF16 or ExportDType.Nf4 or ExportDType.Nf4Dq or ExportDType.Int4,
            ExportFormat.Gguf => o.DType is ExportDType.F32 or ExportDType.F16 or ExportDType.BF16 or ExportDType.Q8_0 or ExportDType.Q4_0 or ExportDType.Q4_1,
            ExportFormat.Llama2c => o.DType == ExportDType.F32,
            _ => false,
        };
        if (!ok)
            throw new ExportException($"dtype {ExportOptions.DTypeName(o.DType)} is not available for format {o.Format} " +
                "(safetensors: f32, f16, bf16, nf4, nf4-dq, int4; gguf: f32, f16, bf16, q8_0, q4_0, q4_1; llama2c: f32)");
    }
}
