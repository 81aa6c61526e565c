// Model writers behind the Exporter: HF safetensors folders (f32/f16/bf16, bnb NF4 ± DQ, INT4 groups; shards),
// GGUF models (F32/F16/BF16/Q8_0/Q4_0/Q4_1 with per-tensor fallback, lossless QA-LoRA Q4_1), GGUF LoRA and llama2.c.
using System.Globalization;
using System.Text;
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Quant;

namespace VkPeft.Peft.Export;

internal static class ModelWriters
{
    private static readonly LlamaTensorKind[] LayerOrder =
    [
        LlamaTensorKind.AttnNorm, LlamaTensorKind.Wq, LlamaTensorKind.Wk, LlamaTensorKind.Wv, LlamaTensorKind.Bq,
        LlamaTensorKind.Bk, LlamaTensorKind.Bv, LlamaTensorKind.Wo, LlamaTensorKind.FfnNorm, LlamaTensorKind.WGate,
        LlamaTensorKind.WUp, LlamaTensorKind.WDown,
    ];

    private static TargetModule? Linear(LlamaTensorKind k) => k switch
    {
        LlamaTensorKind.Wq => TargetModule.Q,
        LlamaTensorKind.Wk => TargetModule.K,
        LlamaTensorKind.Wv => TargetModule.V,
        LlamaTensorKind.Wo => TargetModule.O,
        LlamaTensorKind.WGate => TargetModule.Gate,
        LlamaTensorKind.WUp => TargetModule.Up,
        LlamaTensorKind.WDown => TargetModule.Down,
        _ => null,
    };

    private static float[]? Pick(LlamaWeights w, LlamaTensorKind k, int layer) => k switch
    {
        LlamaTensorKind.TokenEmbedding => w.TokenEmbedding,
        LlamaTensorKind.FinalNorm => w.FinalNorm,
        LlamaTensorKind.Classifier => w.Classifier,
        LlamaTensorKind.AttnNorm => w.Layers[layer].AttnNorm,
        LlamaTensorKind.FfnNorm => w.Layers[layer].FfnNorm,
        LlamaTensorKind.Bq => w.Layers[layer].Bq,
        LlamaTensorKind.Bk => w.Layers[layer].Bk,
        LlamaTensorKind.Bv => w.Layers[layer].Bv,
        _ => ModelTensors.Linear(w.Layers[layer], Linear(k)!.Value),
    };

    /// <summary>(kind, layer) of every tensor the model holds, in file order.</summary>
    private static IEnumerable<(LlamaTensorKind Kind, int Layer)> Tensors(LlamaConfig c, LlamaWeights w)
    {
        yield return (LlamaTensorKind.TokenEmbedding, -1);
        for (int l = 0; l < c.NLayers; l++)
            foreach (var k in LayerOrder)
                if (Pick(w, k, l) is not null) yield return (k, l);
        yield return (LlamaTensorKind.FinalNorm, -1);
        if (w.Classifier is not null) yield return (LlamaTensorKind.Classifier, -1);
    }

    private static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }

    /// <summary>INT4 rows (codes, scales, mins) permuted between RoPE layouts.</summary>
    internal static Int4GroupQuantized PermuteInt4(Int4GroupQuantized q, int heads, int headDim, RopeLayout from, RopeLayout to)
    {
        if (from == to) return q;
        var codes = new byte[q.Count];
        for (long e = 0; e < codes.LongLength; e++) codes[e] = (byte)Nibbles.Get(q.Packed, e);
        codes = QkPermutation.PermuteRows<byte>(codes, heads, headDim, q.InFeatures, from, to);
        var packed = new byte[q.Packed.Length];
        for (long e = 0; e < codes.LongLength; e++) Nibbles.Set(packed, e, codes[e]);
        return q with
        {
            Packed = packed,
            Scales = QkPermutation.PermuteRows<float>(q.Scales, heads, headDim, q.GroupsPerRow, from, to),
            Mins = QkPermutation.PermuteRows<float>(q.Mins, heads, headDim, q.GroupsPerRow, from, to),
        };
    }

    /// <summary>The merged model's INT4 weights in <paramref name="layout"/>.</summary>
    private static Dictionary<(int, TargetModule), Int4GroupQuantized>? Int4InLayout(MergedModel m, RopeLayout layout)
    {
        if (m.Int4 is null) return null;
        var c = m.Config;
        return m.Int4.ToDictionary(kv => kv.Key, kv => ModelTensors.PermutedHeads(c, kv.Key.Kind) is { } heads
            ? PermuteInt4(kv.Value, heads, c.HeadDim, c.RopeLayout, layout)
            : kv.Value);
    }

    // ------------------------------------------------------------------ HF safetensors

    public static void WriteHf(string dir, MergedModel m, LoadedModel source, ExportOptions o, ExportReport report)
    {
        var (c, w) = ModelTensors.ToLayout(m.Config, m.Weights, RopeLayout.RotateHalf);
        var int4 = Int4InLayout(m, RopeLayout.RotateHalf);
        string floatType = o.DType switch { ExportDType.F16 => "F16", ExportDType.BF16 => "BF16", _ => "F32" };
        string torchDtype = floatType switch { "F16" => "float16", "BF16" => "bfloat16", _ => "float32" };
        var entries = new List<SafeTensorsWriter.Entry>();
        foreach (var (kind, layer) in Tensors(c, w))
        {
            string name = HfCheckpoint.TensorName(kind, layer);
            float[] data = Pick(w, kind, layer)!;
            int[] shape = LlamaWeights.ShapeOf(c, kind);
            var linear = Linear(kind);
            if (linear is null || o.DType is ExportDType.F32 or ExportDType.F16 or ExportDType.BF16)
            {
                entries.Add(SafeTensorsWriter.FromFloat32(name, shape.Select(d => (long)d).ToArray(), data, floatType));
                continue;
            }
            if (o.DType is ExportDType.Nf4 or ExportDType.Nf4Dq)
            {
                var q = QuantizedLinearWeight.Bnb4Bit(data, shape[0], shape[1], QuantType.Nf4, o.Nf4Blocksize, o.DType == ExportDType.Nf4Dq, name);
                report.AddError(MaxAbsDiff(q.Dequantize(), data));
                entries.AddRange(QuantizedSafeTensors.Bnb4BitEntries(name, q, torchDtype));
            }
            else
            {
                var q = int4?[(layer, linear.Value)] ?? Int4GroupCodec.Quantize(data, shape[0], shape[1], o.Int4GroupSize, name);
                var dq = new float[q.Count];
                Int4GroupCodec.Dequantize(q, dq);
                report.AddError(MaxAbsDiff(dq, data));
                entries.AddRange(QuantizedSafeTensors.Int4Entries(name, q));
            }
        }
        if (report.MaxAbsWeightError is not null)
            report.WeightErrorBasis = int4 is not null
                ? "stored INT4 (dequantized) vs the merged INT4 weights (the same values: the QA-LoRA merge only shifts the mins)"
                : "stored quantized linear weights (dequantized) vs the float32 weights being exported";

        long total = entries.Sum(e => e.Data.LongLength);
        if (total <= o.MaxShardBytes)
        {
            SafeTensorsWriter.Write(Path.Combine(dir, HfCheckpoint.SingleFile), entries);
            report.Files.Add(HfCheckpoint.SingleFile);
        }
        else
        {
            var shards = new List<List<SafeTensorsWriter.Entry>> { new() };
            long size = 0;
            foreach (var e in entries)
            {
                if (size > 0 && size + e.Data.LongLength > o.MaxShardBytes)
                {
                    shards.Add([]);
                    size = 0;
                }
                shards[^1].Add(e);
                size += e.Data.LongLength;
            }
            var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int s = 0; s < shards.Count; s++)
            {
                string file = string.Create(CultureInfo.InvariantCulture, $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors");
                SafeTensorsWriter.Write(Path.Combine(dir, file), shards[s]);
                foreach (var e in shards[s]) map[e.Name] = file;
                report.Files.Add(file);
            }
            using var ms = new MemoryStream();
            using (var jw = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
            {
                jw.WriteStartObject();
                jw.WriteStartObject("metadata");
                jw.WriteNumber("total_size", total);
                jw.WriteEndObject();
                jw.WriteStartObject("weight_map");
                foreach (var (k, v) in map) jw.WriteString(k, v);
                jw.WriteEndObject();
                jw.WriteEndObject();
            }
            File.WriteAllBytes(Path.Combine(dir, HfCheckpoint.IndexFile), ms.ToArray());
            report.Files.Add(HfCheckpoint.IndexFile);
        }
        foreach (var e in entries) report.Tensors.Add(new ExportedTensor(e.Name, e.DType, e.Shape, e.Data.LongLength));

        int groupSize = int4?.Values.First().GroupSize ?? o.Int4GroupSize;
        File.WriteAllBytes(Path.Combine(dir, HfCheckpoint.ConfigFile), HfConfigJson(c, w, torchDtype, o, groupSize));
        report.Files.Add(HfCheckpoint.ConfigFile);
        CopyTokenizerFiles(dir, source, report);
    }

    private static byte[] HfConfigJson(LlamaConfig c, LlamaWeights w, string torchDtype, ExportOptions o, int int4Group)
    {
        if (w.RopeFreqFactors is not null && c.RopeScaling is null)
            throw new ExportException("the model has GGUF rope_freqs factors but no RoPE scaling config; config.json cannot express them");
        string modelType = c.Architecture is "mistral" or "qwen2" ? c.Architecture : "llama";
        using var ms = new MemoryStream();
        using (var j = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteStartArray("architectures");
            j.WriteStringValue(modelType switch { "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => "LlamaForCausalLM" });
            j.WriteEndArray();
            j.WriteString("model_type", modelType);
            j.WriteBoolean("attention_bias", c.AttentionBias);
            j.WriteBoolean("mlp_bias", false);
            j.WriteNumber("bos_token_id", c.BosId);
            j.WriteNumber("eos_token_id", c.EosId);
            j.WriteString("hidden_act", "silu");
            j.WriteNumber("hidden_size", c.Dim);
            j.WriteNumber("intermediate_size", c.HiddenDim);
            j.WriteNumber("num_hidden_layers", c.NLayers);
            j.WriteNumber("num_attention_heads", c.NHeads);
            j.WriteNumber("num_key_value_heads", c.NKvHeads);
            j.WriteNumber("head_dim", c.HeadDim);
            j.WriteNumber("max_position_embeddings", c.MaxSeqLen);
            j.WriteNumber("rms_norm_eps", c.RmsNormEps);
            j.WriteNumber("rope_theta", c.RopeTheta);
            if (c.RopeScaling is { } s)
            {
                j.WriteStartObject("rope_scaling");
                j.WriteString("rope_type", s.Type);
                j.WriteNumber("factor", s.Factor);
                if (s.Type == "llama3")
                {
                    j.WriteNumber("low_freq_factor", s.LowFreqFactor);
                    j.WriteNumber("high_freq_factor", s.HighFreqFactor);
                    j.WriteNumber("original_max_position_embeddings", s.OriginalMaxPositionEmbeddings);
                }
                j.WriteEndObject();
            }
            else j.WriteNull("rope_scaling");
            if (c.SlidingWindow is { } sw)
            {
                j.WriteNumber("sliding_window", sw);
                if (modelType == "qwen2") j.WriteBoolean("use_sliding_window", true);
            }
            j.WriteBoolean("tie_word_embeddings", c.TiedClassifier);
            j.WriteString("torch_dtype", torchDtype);
            j.WriteNumber("vocab_size", c.VocabSize);
            if (o.DType is ExportDType.Nf4 or ExportDType.Nf4Dq)
            {
                j.WriteStartObject("quantization_config");
                j.WriteString("quant_method", "bitsandbytes");
                j.WriteBoolean("load_in_4bit", true);
                j.WriteBoolean("load_in_8bit", false);
                j.WriteString("bnb_4bit_quant_type", "nf4");
                j.WriteBoolean("bnb_4bit_use_double_quant", o.DType == ExportDType.Nf4Dq);
                j.WriteString("bnb_4bit_compute_dtype", torchDtype);
                j.WriteString("bnb_4bit_quant_storage", "uint8");
                j.WriteStartArray("llm_int8_skip_modules");
                j.WriteStringValue("lm_head");
                j.WriteEndArray();
                j.WriteEndObject();
            }
            else if (o.DType == ExportDType.Int4)
            {
                j.WriteStartObject("quantization_config");
                j.WriteString("quant_method", QuantizedSafeTensors.Int4QuantMethod);
                j.WriteNumber("bits", 4);
                j.WriteNumber("group_size", int4Group);
                j.WriteString("formula", "w = scale * q + min; q in 0..15, bitsandbytes nibble order; scales/mins [out, ceil(in/group_size)]");
                j.WriteEndObject();
            }
            j.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static void CopyTokenizerFiles(string dir, LoadedModel source, ExportReport report)
    {
        var src = source.Source;
        if (src.Format == ModelSourceFormat.HuggingFace)
        {
            foreach (var f in new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" })
            {
                string p = Path.Combine(src.Path, f);
                if (!File.Exists(p)) continue;
                File.Copy(p, Path.Combine(dir, f));
                report.Files.Add(f);
            }
        }
        else if (src.Format is ModelSourceFormat.Llama2cV0 or ModelSourceFormat.Llama2cV1 && src.TokenizerPath is { } tok)
        {
            File.Copy(tok, Path.Combine(dir, "tokenizer.bin"));
            report.Files.Add("tokenizer.bin");
            report.Notes.Add("tokenizer.bin (llama2.c format) copied; Hugging Face tools need tokenizer.json or tokenizer.model");
        }
        else if (source.Tokenizer is ScoreMergeTokenizer sm)
        {
            Llama2cTokenizer.Write(Path.Combine(dir, "tokenizer.bin"), sm);
            report.Files.Add("tokenizer.bin");
            report.Notes.Add("the GGUF vocabulary was written as a llama2.c tokenizer.bin; Hugging Face tools need tokenizer.json or tokenizer.model");
        }
        else report.Notes.Add("no tokenizer files written: " + (src.TokenizerNote ?? "the source tokenizer has no file form"));
    }

    // ------------------------------------------------------------------ GGUF model

    private static GgmlType Requested(ExportDType d) => d switch
    {
        ExportDType.F32 => GgmlType.F32,
        ExportDType.F16 => GgmlType.F16,
        ExportDType.BF16 => GgmlType.BF16,
        ExportDType.Q8_0 => GgmlType.Q8_0,
        ExportDType.Q4_0 => GgmlType.Q4_0,
        ExportDType.Q4_1 => GgmlType.Q4_1,
        _ => throw new ExportException($"dtype {ExportOptions.DTypeName(d)} is not a GGUF tensor type (use f32, f16, bf16, q8_0, q4_0, q4_1)"),
    };

    private static uint FileType(GgmlType t) => t switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q4_0 => 2,
        GgmlType.Q4_1 => 3,
        GgmlType.Q8_0 => 7,
        GgmlType.BF16 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>GGUF architecture name and the RoPE layout its q/k rows use (llama: interleaved pairs; qwen2: rotate-half).</summary>
    public static (string Arch, RopeLayout Layout) GgufArch(LlamaConfig c) =>
        c.Architecture == "qwen2" ? ("qwen2", RopeLayout.RotateHalf) : ("llama", RopeLayout.InterleavedPairs);

    public static void WriteGguf(string path, MergedModel m, LoadedModel source, ExportOptions o, ExportReport report)
    {
        var requested = Requested(o.DType);
        var (arch, layout) = GgufArch(m.Config);
        var (c, w) = ModelTensors.ToLayout(m.Config, m.Weights, layout);
        var int4 = requested == GgmlType.Q4_1 ? Int4InLayout(m, layout) : null;
        if (int4 is not null && int4.Values.Any(q => q.GroupSize != 32)) int4 = null;
        var g = new GgufWriter();
        g.AddString("general.architecture", arch);
        g.AddString("general.type", "model");
        g.AddString("general.name", o.Name ?? Path.GetFileNameWithoutExtension(source.Source.Path));
        g.AddUInt32("general.file_type", FileType(requested));
        if (requested is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1) g.AddUInt32("general.quantization_version", 2);
        g.AddUInt32($"{arch}.context_length", (uint)c.MaxSeqLen);
        g.AddUInt32($"{arch}.embedding_length", (uint)c.Dim);
        g.AddUInt32($"{arch}.block_count", (uint)c.NLayers);
        g.AddUInt32($"{arch}.feed_forward_length", (uint)c.HiddenDim);
        g.AddUInt32($"{arch}.attention.head_count", (uint)c.NHeads);
        g.AddUInt32($"{arch}.attention.head_count_kv", (uint)c.NKvHeads);
        if (c.HeadDim * c.NHeads != c.Dim)
        {
            g.AddUInt32($"{arch}.attention.key_length", (uint)c.HeadDim);
            g.AddUInt32($"{arch}.attention.value_length", (uint)c.HeadDim);
        }
        g.AddUInt32($"{arch}.rope.dimension_count", (uint)c.HeadDim);
        g.AddUInt32($"{arch}.vocab_size", (uint)c.VocabSize);
        g.AddFloat32($"{arch}.attention.layer_norm_rms_epsilon", (float)c.RmsNormEps);
        g.AddFloat32($"{arch}.rope.freq_base", (float)c.RopeTheta);
        float[]? ropeFreqs = w.RopeFreqFactors;
        if (c.RopeScaling is { Type: "linear" } lin)
        {
            g.AddString($"{arch}.rope.scaling.type", "linear");
            g.AddFloat32($"{arch}.rope.scaling.factor", (float)lin.Factor);
        }
        else if (c.RopeScaling is { Type: "llama3" } && ropeFreqs is null)
        {
            // llama.cpp bakes llama3 scaling into rope_freqs.weight: per-frequency divisors of the unscaled θ_i.
            var scaled = ReferenceForward.RopeInverseFrequencies(c);
            ropeFreqs = new float[c.HeadDim / 2];
            for (int i = 0; i < ropeFreqs.Length; i++) ropeFreqs[i] = (float)(Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim) / scaled[i]);
        }
        AddTokenizer(g, source.Tokenizer, c, report);

        foreach (var (kind, layer) in Tensors(c, w))
        {
            string name = GgufLlama.TensorName(kind, layer);
            float[] data = Pick(w, kind, layer)!;
            int[] shape = LlamaWeights.ShapeOf(c, kind);
            ulong[] ne = shape.Reverse().Select(d => (ulong)d).ToArray();
            if (shape.Length == 1)
            {
                AddGgufTensor(g, report, name, ne, GgmlType.F32, Encode(GgmlType.F32, data, name));
                continue;
            }
            GgmlType type = requested;
            if (type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1 && shape[1] % 32 != 0)
            {
                type = GgmlType.F16;
                report.Fallbacks.Add(new ExportFallback(name, requested.ToString(), "F16", $"row length {shape[1]} is not a multiple of the 32-weight block"));
            }
            var linear = Linear(kind);
            if (type == GgmlType.Q4_1 && int4 is not null && linear is { } t && int4.TryGetValue((layer, t), out var q))
            {
                var (bytes, err) = Q4_1FromInt4(q);
                report.Q4_1Fp16Deviation = Math.Max(report.Q4_1Fp16Deviation ?? 0, err);
                AddGgufTensor(g, report, name, ne, type, bytes);
                continue;
            }
            byte[] encoded = Encode(type, data, name);
            if (type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1)
            {
                var back = new float[data.Length];
                GgufBlockCodec.Dequantize(type, encoded, data.Length, back);
                report.AddError(MaxAbsDiff(back, data));
            }
            AddGgufTensor(g, report, name, ne, type, encoded);
        }
        if (ropeFreqs is not null)
            AddGgufTensor(g, report, "rope_freqs.weight", [(ulong)ropeFreqs.Length], GgmlType.F32, Encode(GgmlType.F32, ropeFreqs, "rope_freqs.weight"));
        if (report.MaxAbsWeightError is not null)
            report.WeightErrorBasis = "tensors quantized here (dequantized) vs the float32 weights being exported";
        g.Write(path);
    }

    private static byte[] Encode(GgmlType type, float[] data, string name) => GgufBlockCodec.Quantize(type, data, name);

    private static void AddGgufTensor(GgufWriter g, ExportReport report, string name, ulong[] ne, GgmlType type, byte[] data)
    {
        g.AddTensor(name, ne, type, data);
        report.Tensors.Add(new ExportedTensor(name, type.ToString(), ne.Select(d => (long)d).ToArray(), data.LongLength));
    }

    /// <summary>
    /// Q4_1 blocks holding an INT4 (g = 32) weight's codes unchanged: d = fp16(scale), m = fp16(min), qs[j] = q[j] |
    /// q[j+16] &lt;&lt; 4. Returns the bytes and the max |fp16(d)·q + fp16(m) − (scale·q + min)| (float32 arithmetic, as both decoders).
    /// </summary>
    internal static (byte[] Bytes, double MaxDeviation) Q4_1FromInt4(Int4GroupQuantized q)
    {
        if (q.GroupSize != 32 || q.InFeatures % 32 != 0) throw new ArgumentException("Q4_1 needs groups of 32 aligned to rows", nameof(q));
        int groups = q.GroupsPerRow;
        var bytes = new byte[(long)q.OutFeatures * groups * 20];
        double maxDev = 0;
        for (int o = 0; o < q.OutFeatures; o++)
            for (int k = 0; k < groups; k++)
            {
                int gi = o * groups + k;
                var blk = bytes.AsSpan(gi * 20, 20);
                ushort d16 = HalfPrecision.ToF16(q.Scales[gi]), m16 = HalfPrecision.ToF16(q.Mins[gi]);
                BitConverter.TryWriteBytes(blk, d16);
                BitConverter.TryWriteBytes(blk[2..], m16);
                float d = HalfPrecision.FromF16(d16), m = HalfPrecision.FromF16(m16);
                long start = (long)o * q.InFeatures + k * 32;
                for (int j = 0; j < 32; j++)
                {
                    int code = Nibbles.Get(q.Packed, start + j);
                    if (j < 16) blk[4 + j] = (byte)code;
                    else blk[4 + j - 16] |= (byte)(code << 4);
                    float stored = d * code + m, exact = q.Scales[gi] * code + q.Mins[gi];
                    maxDev = Math.Max(maxDev, Math.Abs((double)stored - exact));
                }
            }
        return (bytes, maxDev);
    }

    private static void AddTokenizer(GgufWriter g, ITextTokenizer? tok, LlamaConfig c, ExportReport report)
    {
        if (tok is not ScoreMergeTokenizer sm)
        {
            report.Notes.Add(tok is null
                ? "no tokenizer embedded (the source has none); llama.cpp needs tokenizer.ggml.* to run the file"
                : "no tokenizer embedded: only SentencePiece-style (score merge) vocabularies are written to GGUF");
            return;
        }
        if (sm.VocabSize != c.VocabSize)
        {
            report.Notes.Add($"no tokenizer embedded: it has {sm.VocabSize} tokens, the model {c.VocabSize}");
            return;
        }
        var tokens = new string[sm.VocabSize];
        var scores = new float[sm.VocabSize];
        var types = new int[sm.VocabSize];
        for (int i = 0; i < tokens.Length; i++)
        {
            string piece = Encoding.UTF8.GetString(sm.PieceBytes(i));
            tokens[i] = piece.Replace(' ', '\u2581');
            scores[i] = sm.Score(i);
            types[i] = i == sm.Bos || i == sm.Eos ? 3
                : piece == "<unk>" ? 2
                : piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece.EndsWith('>') ? 6
                : 1;
        }
        g.AddString("tokenizer.ggml.model", "llama");
        g.AddArray("tokenizer.ggml.tokens", tokens);
        g.AddArray("tokenizer.ggml.scores", scores);
        g.AddArray("tokenizer.ggml.token_type", types);
        g.AddUInt32("tokenizer.ggml.bos_token_id", (uint)sm.Bos);
        g.AddUInt32("tokenizer.ggml.eos_token_id", (uint)sm.Eos);
        int unk = Array.IndexOf(tokens, "<unk>");
        if (unk >= 0) g.AddUInt32("tokenizer.ggml.unknown_token_id", (uint)unk);
        g.AddBool("tokenizer.ggml.add_bos_token", true);
        g.AddBool("tokenizer.ggml.add_eos_token", false);
        g.AddBool("tokenizer.ggml.add_space_prefix", sm.AddDummyPrefix);
    }

    // ------------------------------------------------------------------ GGUF LoRA

    /// <summary>
    /// llama.cpp LoRA adapter: <c>&lt;base tensor&gt;.lora_a</c> ne [in, r] (PEFT A as is) and <c>.lora_b</c> ne [r, out]
    /// (B with q/k rows in the GGUF base's layout), F32; adapter.lora.alpha = scaling·r so llama.cpp's alpha/rank equals
    /// our scaling (alpha/r, or alpha/√r with rsLoRA). QA-LoRA is written as its expanded plain LoRA.
    /// </summary>
    public static void WriteGgufLora(string path, AdapterWeights adapter, LlamaConfig baseConfig, ExportOptions o, ExportReport report)
    {
        var cfg = adapter.Config;
        if (cfg.Method == PeftMethod.Adapter)
            throw new ExportException("GGUF LoRA files cannot hold a bottleneck adapter; use the vkpeft adapter format");
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        if (cfg.Method == PeftMethod.QaLora)
        {
            report.Notes.Add(int.IsPow2(cfg.GroupSize)
                ? $"QA-LoRA written as the equivalent plain LoRA (A expanded over groups of {cfg.GroupSize}, times 1/{cfg.GroupSize}: exact)"
                : $"QA-LoRA written as the equivalent plain LoRA (A expanded and times 1/{cfg.GroupSize}, rounded to float32)");
            adapter = AdapterMerge.ExpandQaLora(adapter, baseConfig);
        }
        var (arch, layout) = GgufArch(baseConfig);
        var g = new GgufWriter();
        g.AddString("general.architecture", arch);
        g.AddString("general.type", "adapter");
        g.AddString("general.name", o.Name ?? Path.GetFileNameWithoutExtension(o.OutPath));
        g.AddString("adapter.type", "lora");
        g.AddFloat32("adapter.lora.alpha", cfg.Scaling * cfg.Rank);
        int r = cfg.Rank;
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains))
            {
                var (outF, inF) = ModelTensors.Shape(baseConfig, t);
                string baseName = GgufLlama.TensorName(ModelTensors.Kind(t), l);
                var a = adapter.Tensors[AdapterWeights.LoraA(l, t)];
                var b = adapter.Tensors[AdapterWeights.LoraB(l, t)];
                float[] bData = ModelTensors.PermutedHeads(baseConfig, t) is { } heads
                    ? QkPermutation.PermuteRows<float>(b.Data, heads, baseConfig.HeadDim, r, baseConfig.RopeLayout, layout)
                    : b.Data;
                AddGgufTensor(g, report, baseName + ".lora_a", [(ulong)inF, (ulong)r], GgmlType.F32, Encode(GgmlType.F32, a.Data, baseName + ".lora_a"));
                AddGgufTensor(g, report, baseName + ".lora_b", [(ulong)r, (ulong)outF], GgmlType.F32, Encode(GgmlType.F32, bData, baseName + ".lora_b"));
            }
        g.Write(path);
    }

    // ------------------------------------------------------------------ llama2.c

    public static void WriteLlama2c(string path, MergedModel m, LoadedModel source, ExportOptions o, ExportReport report)
    {
        if (o.DType != ExportDType.F32) throw new ExportException($"llama2.c v0 files are float32 only (got dtype {ExportOptions.DTypeName(o.DType)})");
        var (c, w) = ModelTensors.ToLayout(m.Config, m.Weights, RopeLayout.InterleavedPairs);
        try
        {
            Llama2cCheckpoint.WriteV0(path, c, w);
        }
        catch (ArgumentException e)
        {
            throw new ExportException("cannot export to llama2.c: " + e.Message, e);
        }
        foreach (var (kind, layer) in Tensors(c, w))
        {
            var shape = LlamaWeights.ShapeOf(c, kind);
            report.Tensors.Add(new ExportedTensor(layer < 0 ? kind.ToString() : $"layers.{layer}.{kind}", "F32", shape.Select(d => (long)d).ToArray(), 4L * Pick(w, kind, layer)!.Length));
        }
        report.Notes.Add(c.TiedClassifier ? "shared classifier (positive vocab_size in the header)" : "separate classifier (negative vocab_size in the header)");
    }

    /// <summary>Writes tokenizer.bin next to a llama2.c export (copy of the source's, or converted from a score-merge vocabulary).</summary>
    public static void WriteLlama2cTokenizer(string modelPath, LoadedModel source, bool force, ExportReport report)
    {
        string target = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, "tokenizer.bin");
        if (File.Exists(target) && !force)
        {
            report.Notes.Add($"kept the existing {target} (pass force to replace it)");
            return;
        }
        if (source.Source.Format is ModelSourceFormat.Llama2cV0 or ModelSourceFormat.Llama2cV1 && source.Source.TokenizerPath is { } tok)
        {
            if (Path.GetFullPath(tok) != target) File.Copy(tok, target, overwrite: true);
        }
        else if (source.Tokenizer is ScoreMergeTokenizer sm) Llama2cTokenizer.Write(target, sm);
        else
        {
            report.Notes.Add("no tokenizer.bin written: the source tokenizer is not a score-merge (SentencePiece-style) vocabulary");
            return;
        }
        report.Files.Add(target);
    }
}
