// GGUF files: llama models (F32/F16/BF16/Q8_0/Q4_0/Q4_1 with per-tensor fallback, lossless QA-LoRA Q4_1) and llama.cpp
// LoRA adapters.
using System.Text;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Quant;

namespace VkPeft.Peft.Export;

internal static partial class ModelWriters
{
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
            GgmlType type = kind is LlamaTensorKind.TokenEmbedding or LlamaTensorKind.Classifier
                ? (o.EmbeddingsDType is { } e ? Requested(e) : requested is GgmlType.F16 or GgmlType.BF16 ? requested : GgmlType.F32)
                : requested;
            if (type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1 && shape[1] % 32 != 0)
            {
                type = GgmlType.F16;
                report.Fallbacks.Add(new ExportFallback(name, requested.ToString(), "F16", $"row length {shape[1]} is not a multiple of the 32-weight block"));
            }
            var linear = kind.ToTarget();
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
        if (tok is HfTokenizer hf)
        {
            AddHfTokenizer(g, hf, c, report);
            return;
        }
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
            // As llama.cpp's llama2.c converter writes them: a llama2.c vocabulary stores BOS/EOS as "\n<s>\n"/"\n</s>\n";
            // the GGUF gets <unk>, <s>, </s> (without it llama.cpp warns that EOS is not an end-of-generation token).
            piece = i == sm.Bos && piece.Trim() == "<s>" ? "<s>"
                : i == sm.Eos && piece.Trim() == "</s>" ? "</s>"
                : i == 0 && piece.Trim() == "<unk>" ? "<unk>"
                : piece;
            tokens[i] = piece.Replace(' ', '\u2581');
            scores[i] = sm.Score(i);
            types[i] = i == sm.Bos || i == sm.Eos || piece.Length == 0 ? 3
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

    /// <summary>
    /// A tokenizer.json as llama.cpp's vocabulary: byte-level BPE as "gpt2" (tokens, merges, the pre-tokenizer named by
    /// its regex), SentencePiece-style BPE as "llama" (score = −merge rank). Ids the model has beyond the tokenizer are
    /// written as unused [PADn] tokens.
    /// </summary>
    private static void AddHfTokenizer(GgufWriter g, HfTokenizer hf, LlamaConfig c, ExportReport report)
    {
        if (hf.VocabSize > c.VocabSize)
        {
            report.Notes.Add($"no tokenizer embedded: it has {hf.VocabSize} ids, the model {c.VocabSize}");
            return;
        }
        string? pre = null;
        if (hf.ByteLevel)
        {
            pre = hf.SplitPattern switch
            {
                HfTokenizers.Llama3Pattern => "llama-bpe",
                HfPipeline.Gpt2Pattern => "gpt2",
                var p when p == HfTokenizers.Llama3Pattern.Replace(@"\p{N}{1,3}", @"\p{N}", StringComparison.Ordinal) => "qwen2",
                _ => null,
            };
            if (pre is null)
            {
                report.Notes.Add("no tokenizer embedded: its pre-tokenizer split has no llama.cpp name (llama-bpe, qwen2, gpt2)");
                return;
            }
        }
        var tokens = new string[c.VocabSize];
        var types = new int[c.VocabSize];
        var special = hf.AddedTokens.ToDictionary(a => a.Id);
        for (int i = 0; i < tokens.Length; i++)
        {
            string? t = hf.TokenString(i);
            tokens[i] = t ?? $"[PAD{i}]";
            types[i] = t is null ? 5
                : special.TryGetValue(i, out var a) ? (a.Special ? 3 : 4)
                : i == hf.Model.UnkId ? 2
                : !hf.ByteLevel && t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t.EndsWith('>') ? 6
                : 1;
        }
        if (hf.ByteLevel)
        {
            g.AddString("tokenizer.ggml.model", "gpt2");
            g.AddString("tokenizer.ggml.pre", pre!);
            g.AddArray("tokenizer.ggml.tokens", tokens);
            g.AddArray("tokenizer.ggml.token_type", types);
            g.AddArray("tokenizer.ggml.merges", hf.Model.Merges.Select(m => m.Left + " " + m.Right).ToArray());
        }
        else
        {
            var scores = new float[tokens.Length];
            Array.Fill(scores, float.NegativeInfinity);
            var merges = hf.Model.Merges;
            for (int rank = 0; rank < merges.Count; rank++)
                if (hf.Model.TryGetId(merges[rank].Left + merges[rank].Right, out int id) && float.IsNegativeInfinity(scores[id])) scores[id] = -rank;
            g.AddString("tokenizer.ggml.model", "llama");
            g.AddArray("tokenizer.ggml.tokens", tokens);
            g.AddArray("tokenizer.ggml.scores", scores);
            g.AddArray("tokenizer.ggml.token_type", types);
            g.AddBool("tokenizer.ggml.add_space_prefix", hf.PrependsSpace);
            if (hf.Model.UnkId >= 0) g.AddUInt32("tokenizer.ggml.unknown_token_id", (uint)hf.Model.UnkId);
        }
        if (hf.Bos >= 0) g.AddUInt32("tokenizer.ggml.bos_token_id", (uint)hf.Bos);
        if (hf.Eos >= 0) g.AddUInt32("tokenizer.ggml.eos_token_id", (uint)hf.Eos);
        var (prefix, suffix) = hf.SpecialFraming;
        g.AddBool("tokenizer.ggml.add_bos_token", hf.Bos >= 0 && prefix.Contains(hf.Bos));
        g.AddBool("tokenizer.ggml.add_eos_token", hf.Eos >= 0 && suffix.Contains(hf.Eos));
        if (hf.ChatTemplate != null) g.AddString("tokenizer.chat_template", hf.ChatTemplate);
    }

    /// <summary>
    /// llama.cpp LoRA adapter: <c>&lt;base tensor&gt;.lora_a</c> ne [in, r] (PEFT A as is) and <c>.lora_b</c> ne [r, out]
    /// (B with q/k rows in the GGUF base's layout), F32; adapter.lora.alpha = scaling·r so llama.cpp's alpha/rank equals
    /// our scaling (alpha/r, or alpha/√r with rsLoRA). QA-LoRA is written as its expanded plain LoRA.
    /// </summary>
    public static void WriteGgufLora(string path, AdapterWeights adapter, LlamaConfig baseConfig, ExportOptions o, ExportReport report)
    {
        var cfg = adapter.Config;
        if (cfg.Method.GgufLoraUnsupportedReason is { } why) throw new ExportException(why);
        AdapterMerge.Validate(adapter, baseConfig, "adapter");
        adapter = cfg.Method.AsPlainLora(adapter, baseConfig, report.Notes)
            ?? throw new ExportException($"GGUF LoRA files cannot hold {cfg.Method} adapters; use the vkpeft adapter format");
        var (arch, layout) = GgufArch(baseConfig);
        var g = new GgufWriter();
        g.AddString("general.architecture", arch);
        g.AddString("general.type", "adapter");
        g.AddString("general.name", o.Name ?? Path.GetFileNameWithoutExtension(o.OutPath));
        g.AddString("adapter.type", "lora");
        var lora = adapter.Config.SettingsOf<LoraSettings>();
        g.AddFloat32("adapter.lora.alpha", lora.Scaling * lora.Rank);
        if (lora.UseRsLora)
            report.Notes.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"rsLoRA: llama.cpp scales by alpha/rank and knows no rsLoRA, so adapter.lora.alpha is written as alpha·√r = {lora.Scaling * lora.Rank:G6} (lora_alpha {lora.Alpha:G6}, r {lora.Rank}) to give the trained scale alpha/√r = {lora.Scaling:G6}"));
        int r = lora.Rank;
        for (int l = 0; l < baseConfig.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds.Where(cfg.Targets.Contains))
            {
                var (outF, inF) = baseConfig.LinearShape(t);
                string baseName = GgufLlama.TensorName(t.ToKind(), l);
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
}
