// HF safetensors model folders: f32/f16/bf16, bitsandbytes NF4 ± double quantization, vkpeft INT4 groups; shards,
// config.json and the tokenizer files.
using System.Globalization;
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Quant;

namespace VkPeft.Peft.Export;

internal static partial class ModelWriters
{
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
            var linear = kind.ToTarget();
            if (linear is null || o.DType is ExportDType.F32 or ExportDType.F16 or ExportDType.BF16)
            {
                string type = kind is LlamaTensorKind.TokenEmbedding or LlamaTensorKind.Classifier ? EmbeddingsFloatType(o, floatType) : floatType;
                entries.Add(SafeTensorsWriter.FromFloat32(name, shape.Select(d => (long)d).ToArray(), data, type));
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

    /// <summary>Safetensors dtype of the token embedding and classifier: the float dtype of the export unless ExportOptions.EmbeddingsDType says otherwise.</summary>
    private static string EmbeddingsFloatType(ExportOptions o, string floatType) => o.EmbeddingsDType switch
    {
        null => floatType,
        ExportDType.F32 => "F32",
        ExportDType.F16 => "F16",
        ExportDType.BF16 => "BF16",
        var d => throw new ExportException($"safetensors stores the token embedding and classifier as f32, f16 or bf16, not {ExportOptions.DTypeName(d.Value)}"),
    };

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
            j.WriteBoolean("mlp_bias", c.MlpBias);
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
}
