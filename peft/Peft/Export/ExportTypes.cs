// Export request and report types (format, dtype, merge base, force, output path; tensors written, fallbacks, error
// introduced by quantization) and the atomic output helper: write under a temporary name, then rename.
using System.Globalization;
using System.Text;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Formats;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Export;

public enum ExportFormat
{
    /// <summary>HF PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).</summary>
    Peft,

    /// <summary>vkpeft adapter folder (vkpeft_adapter.json + adapter_model.safetensors): LoRA, QA-LoRA, bottleneck.</summary>
    VkPeft,

    /// <summary>HF model folder (config.json + model.safetensors or shards + index, tokenizer files).</summary>
    Safetensors,

    /// <summary>GGUF model file (llama architecture).</summary>
    Gguf,

    /// <summary>GGUF LoRA adapter file for llama.cpp --lora.</summary>
    GgufLora,

    /// <summary>llama2.c legacy v0 float32 checkpoint (+ tokenizer.bin).</summary>
    Llama2c,
}

public enum ExportDType { F32, F16, BF16, Nf4, Nf4Dq, Int4, Q8_0, Q4_0, Q4_1 }

public sealed record ExportOptions
{
    public required ExportFormat Format { get; init; }
    public ExportDType DType { get; init; } = ExportDType.F32;
    public MergeFrom MergeFrom { get; init; } = MergeFrom.Dequantized;

    /// <summary>
    /// Without an adapter and with MergeFrom.Dequantized: the base quantization whose dequantized linear weights the
    /// model export writes — the base an adapter trained on that quantization (e.g. a GGUF LoRA) pairs with. Null or
    /// "none": the original weights.
    /// </summary>
    public BaseQuant? DequantizeBase { get; init; }

    /// <summary>
    /// Token embedding and classifier dtype of a model export. Null: the precision the model ran with — float32 when
    /// the dtype is a block-quantized one (nf4, int4, q8_0, q4_0, q4_1 quantize the linear weights only), the dtype
    /// itself when it is f32, f16 or bf16 (a whole-model precision).
    /// </summary>
    public ExportDType? EmbeddingsDType { get; init; }

    /// <summary>Replace an existing output; without it an existing output is an error.</summary>
    public bool Force { get; init; }

    /// <summary>Output folder (Peft, VkPeft, Safetensors) or file (Gguf, GgufLora, Llama2c).</summary>
    public required string OutPath { get; init; }

    /// <summary>Safetensors model files above this size are split into shards with an index.</summary>
    public long MaxShardBytes { get; init; } = 5_000_000_000;

    /// <summary>NF4 blocksize of nf4/nf4-dq exports.</summary>
    public int Nf4Blocksize { get; init; } = 64;

    /// <summary>Group size of int4 exports (a QA-LoRA merge uses the adapter's group size instead).</summary>
    public int Int4GroupSize { get; init; } = 32;

    /// <summary>general.name / model name recorded in the output; defaults to the source file name.</summary>
    public string? Name { get; init; }

    public static ExportFormat ParseFormat(string text) => text.Trim().ToLowerInvariant() switch
    {
        "peft" => ExportFormat.Peft,
        "vkpeft" => ExportFormat.VkPeft,
        "safetensors" or "hf" => ExportFormat.Safetensors,
        "gguf" => ExportFormat.Gguf,
        "gguf-lora" or "gguf_lora" => ExportFormat.GgufLora,
        "llama2c" or "llama2.c" => ExportFormat.Llama2c,
        _ => throw new SettingException($"{ExportSettings.Format}: unknown export format '{text}' (use peft, vkpeft, safetensors, gguf, gguf-lora, llama2c)"),
    };

    public static ExportDType ParseDType(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" or "float32" => ExportDType.F32,
        "f16" or "float16" => ExportDType.F16,
        "bf16" or "bfloat16" => ExportDType.BF16,
        "nf4" => ExportDType.Nf4,
        "nf4-dq" or "nf4_dq" => ExportDType.Nf4Dq,
        "int4" => ExportDType.Int4,
        "q8_0" => ExportDType.Q8_0,
        "q4_0" => ExportDType.Q4_0,
        "q4_1" => ExportDType.Q4_1,
        _ => throw new SettingException($"{ExportSettings.DType}: unknown dtype '{text}' (use f32, f16, bf16, nf4, nf4-dq, int4, q8_0, q4_0, q4_1)"),
    };

    public static string DTypeName(ExportDType d) => d switch
    {
        ExportDType.Nf4Dq => "nf4-dq",
        _ => d.ToString().ToLowerInvariant(),
    };
}

/// <summary>One tensor written: its name in the file, stored dtype, shape (file order) and bytes.</summary>
public sealed record ExportedTensor(string Name, string DType, long[] Shape, long Bytes);

/// <summary>A tensor stored in another dtype than requested, and why.</summary>
public sealed record ExportFallback(string Tensor, string Requested, string Used, string Reason);

public sealed class ExportReport
{
    public required string OutPath { get; init; }
    public required ExportFormat Format { get; init; }
    public required string DType { get; init; }
    public List<ExportedTensor> Tensors { get; } = [];
    public List<ExportFallback> Fallbacks { get; } = [];
    public List<string> Files { get; } = [];
    public List<string> Notes { get; } = [];

    /// <summary>Largest |stored weight − intended float32 weight| over quantized tensors (null when nothing was quantized).</summary>
    public double? MaxAbsWeightError { get; set; }

    /// <summary>Which weights MaxAbsWeightError compares, in words.</summary>
    public string? WeightErrorBasis { get; set; }

    /// <summary>
    /// Lossless QA-LoRA → GGUF Q4_1 only: max |fp16(d)·q + fp16(m) − (scale·q + min')| over the linear weights written
    /// from the merged INT4 codes (the only change is rounding d = scale and m = min' to fp16).
    /// </summary>
    public double? Q4_1Fp16Deviation { get; set; }

    public long TotalBytes => Tensors.Sum(t => t.Bytes);

    internal void AddError(double err)
    {
        MaxAbsWeightError = Math.Max(MaxAbsWeightError ?? 0, err);
    }

    public string Summary()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.Append(inv, $"{Format} ({DType}) -> {OutPath}: {Tensors.Count} tensors, {TotalBytes} bytes");
        foreach (var group in Tensors.GroupBy(t => t.DType).OrderBy(g => g.Key, StringComparer.Ordinal))
            sb.Append(inv, $"\n  {group.Key}: {group.Count()} tensors, {group.Sum(t => t.Bytes)} bytes");
        foreach (var f in Fallbacks) sb.Append(inv, $"\n  fallback {f.Tensor}: {f.Requested} -> {f.Used} ({f.Reason})");
        if (MaxAbsWeightError is { } e) sb.Append(inv, $"\n  max |weight error| {e:E3} ({WeightErrorBasis})");
        if (Q4_1Fp16Deviation is { } d) sb.Append(inv, $"\n  QA-LoRA INT4 -> Q4_1: max deviation from fp16 d/m {d:E3}");
        foreach (var n in Notes) sb.Append("\n  note: ").Append(n);
        return sb.ToString();
    }
}

/// <summary>Writes an output under a temporary sibling name and renames it into place; refuses to replace without force.</summary>
internal static class AtomicOutput
{
    public static void CheckTarget(string path, bool force)
    {
        if ((System.IO.File.Exists(path) || System.IO.Directory.Exists(path)) && !force)
            throw new ExportException($"output '{path}' already exists; pass --force to overwrite it");
    }

    /// <summary>Fills a temporary folder through <paramref name="fill"/> and renames it to <paramref name="dir"/>.</summary>
    public static void WriteDirectory(string dir, bool force, Action<string> fill)
    {
        string full = Path.GetFullPath(dir);
        CheckTarget(full, force);
        string parent = Path.GetDirectoryName(full)!;
        System.IO.Directory.CreateDirectory(parent);
        string tmp = Path.Combine(parent, "." + Path.GetFileName(full) + ".tmp-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(tmp);
        try
        {
            FaultInjection.BeforeWrite(Path.GetFileName(full));
            fill(tmp);
            foreach (var f in System.IO.Directory.GetFiles(tmp, "*", SearchOption.AllDirectories)) DurableFile.Flush(f);
            DurableFile.SyncDirectory(tmp);
            if (System.IO.Directory.Exists(full)) System.IO.Directory.Delete(full, recursive: true);
            else if (System.IO.File.Exists(full)) System.IO.File.Delete(full);
            System.IO.Directory.Move(tmp, full);
            DurableFile.SyncDirectory(parent);
        }
        finally
        {
            if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, recursive: true);
        }
    }

    /// <summary>Writes a temporary file through <paramref name="write"/> and renames it to <paramref name="path"/>.</summary>
    public static void WriteFile(string path, bool force, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        CheckTarget(full, force);
        string parent = Path.GetDirectoryName(full)!;
        System.IO.Directory.CreateDirectory(parent);
        string tmp = Path.Combine(parent, "." + Path.GetFileName(full) + ".tmp-" + Guid.NewGuid().ToString("N"));
        try
        {
            FaultInjection.BeforeWrite(Path.GetFileName(full));
            write(tmp);
            DurableFile.Flush(tmp);
            if (System.IO.Directory.Exists(full)) System.IO.Directory.Delete(full, recursive: true);
            System.IO.File.Move(tmp, full, overwrite: true);
            DurableFile.SyncDirectory(parent);
        }
        finally
        {
            if (System.IO.File.Exists(tmp)) System.IO.File.Delete(tmp);
        }
    }
}
