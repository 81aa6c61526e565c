// Model exports of stories260K (safetensors f32/f16/bf16/nf4/nf4-dq and shards, GGUF f32/f16/q8_0/q4_0/q4_1,
// llama2.c) loaded back through ModelLoader give the expected logits; GGUF files also parse with MiniGguf.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Quant;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Models;
using Xunit.Abstractions;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class ModelExportTests(ITestOutputHelper output)
{
    private static readonly Lazy<double[][]> BaseLogits = new(() => Logits(Base));

    private static ExportReport Run(string path, ExportFormat format, ExportDType dtype, AdapterWeights? adapter = null, long maxShard = 5_000_000_000) =>
        Exporter.Export(Base, adapter, new ExportOptions { Format = format, DType = dtype, OutPath = path, MaxShardBytes = maxShard });

    [Fact]
    public void SafetensorsF32RoundTripGivesTheSameLogitsAndRotateHalfRows()
    {
        using var dir = new TempDir();
        string outDir = dir.File("hf");
        var report = Run(outDir, ExportFormat.Safetensors, ExportDType.F32);
        var m = ModelLoader.Load(outDir);
        Assert.Equal(ModelSourceFormat.HuggingFace, m.Source.Format);
        Assert.Equal(RopeLayout.RotateHalf, m.Config.RopeLayout);
        Assert.True(m.Config.TiedClassifier);
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.bin")));
        Assert.Contains("config.json", report.Files);
        // q rows permuted by the documented rule, k too (GQA: 4 kv heads), everything else bit-identical.
        var c = Base.Config;
        var wq = Base.Weights.Layers[0].Wq;
        int d = c.HeadDim;
        for (int h = 0; h < c.NHeads; h++)
            for (int cc = 0; cc < 2; cc++)
                for (int i = 0; i < d / 2; i++)
                    Assert.Equal(wq.AsSpan((h * d + 2 * i + cc) * c.Dim, c.Dim).ToArray(), m.Weights.Layers[0].Wq.AsSpan((h * d + cc * d / 2 + i) * c.Dim, c.Dim).ToArray());
        Assert.Equal(Base.Weights.Layers[1].WDown, m.Weights.Layers[1].WDown);
        double err = MaxAbsDiff(Logits(m), BaseLogits.Value);
        output.WriteLine($"safetensors f32: max |Δlogit| = {err:E3} (rotate-half vs interleaved summation order only)");
        Assert.True(err < 1e-9);
    }

    [Theory]
    [InlineData(ExportDType.F16, "F16")]
    [InlineData(ExportDType.BF16, "BF16")]
    public void SafetensorsHalfPrecisionMatchesRoundedWeights(ExportDType dtype, string stored)
    {
        using var dir = new TempDir();
        string outDir = dir.File("hf");
        var report = Run(outDir, ExportFormat.Safetensors, dtype);
        Assert.All(report.Tensors, t => Assert.Equal(stored, t.DType));
        var m = ModelLoader.Load(outDir);
        Func<float, float> round = dtype == ExportDType.F16 ? v => (float)(Half)v : v => VkPeft.Quant.HalfPrecision.FromBf16(VkPeft.Quant.HalfPrecision.ToBf16(v));
        float[] Round(float[] w) => w.Select(round).ToArray();
        var rounded = ModelTensors.WithLinears(Base.Weights, (_, _, w) => Round(w));
        rounded = new LlamaWeights
        {
            TokenEmbedding = Round(rounded.TokenEmbedding),
            FinalNorm = Round(rounded.FinalNorm),
            Layers = rounded.Layers.Select(l => new LlamaLayerWeights
            {
                AttnNorm = Round(l.AttnNorm), Wq = l.Wq, Wk = l.Wk, Wv = l.Wv, Wo = l.Wo, FfnNorm = Round(l.FfnNorm),
                WGate = l.WGate, WUp = l.WUp, WDown = l.WDown,
            }).ToArray(),
        };
        double vsRounded = MaxAbsDiff(Logits(m), Logits(Base.Config, rounded));
        double vsBase = MaxAbsDiff(Logits(m), BaseLogits.Value);
        output.WriteLine($"{stored}: vs rounded weights {vsRounded:E3}, vs f32 base {vsBase:E3}");
        Assert.True(vsRounded < 1e-9);
        Assert.True(vsBase < (dtype == ExportDType.F16 ? 5e-2 : 3e-1));
    }

    [Fact]
    public void ShardedSafetensorsWithIndexLoadBack()
    {
        using var dir = new TempDir();
        string outDir = dir.File("hf");
        var report = Run(outDir, ExportFormat.Safetensors, ExportDType.F32, maxShard: 300_000);
        Assert.True(File.Exists(Path.Combine(outDir, HfCheckpoint.IndexFile)));
        Assert.False(File.Exists(Path.Combine(outDir, HfCheckpoint.SingleFile)));
        Assert.True(report.Files.Count(f => f.StartsWith("model-", StringComparison.Ordinal)) >= 2);
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(outDir, HfCheckpoint.IndexFile)));
        Assert.Equal(report.TotalBytes, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
        Assert.True(MaxAbsDiff(Logits(ModelLoader.Load(outDir)), BaseLogits.Value) < 1e-9);
    }

    [Theory]
    [InlineData(ExportDType.Nf4)]
    [InlineData(ExportDType.Nf4Dq)]
    public void Nf4ExportLoadsBackAsTheQuantizedModel(ExportDType dtype)
    {
        using var dir = new TempDir();
        string outDir = dir.File("nf4");
        var report = Run(outDir, ExportFormat.Safetensors, dtype);
        bool dq = dtype == ExportDType.Nf4Dq;
        using (var cfg = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(outDir, "config.json"))))
        {
            var qc = cfg.RootElement.GetProperty("quantization_config");
            Assert.Equal("bitsandbytes", qc.GetProperty("quant_method").GetString());
            Assert.Equal(dq, qc.GetProperty("bnb_4bit_use_double_quant").GetBoolean());
        }
        var m = ModelLoader.Load(outDir);
        // Expected: each linear weight (in HF layout) NF4-quantized in memory and dequantized.
        var (hc, hw) = ModelTensors.ToLayout(Base.Config, Base.Weights, RopeLayout.RotateHalf);
        double maxErr = 0;
        var expected = ModelTensors.WithLinears(hw, (_, t, w) =>
        {
            var (o, i) = hc.LinearShape(t);
            var back = QuantizedLinearWeight.Bnb4Bit(w, o, i, QuantType.Nf4, 64, dq).Dequantize();
            maxErr = Math.Max(maxErr, MaxAbsDiff(back, w));
            return back;
        });
        for (int l = 0; l < hc.NLayers; l++) Assert.Equal(expected.Layers[l].Wk, m.Weights.Layers[l].Wk);
        Assert.Equal(maxErr, report.MaxAbsWeightError);
        double vsQuantized = MaxAbsDiff(Logits(m), Logits(hc, expected));
        double vsBase = MaxAbsDiff(Logits(m), BaseLogits.Value);
        output.WriteLine($"{dtype}: max weight error {maxErr:E3}; logits vs in-memory quantized {vsQuantized:E3}, vs f32 base {vsBase:E3}");
        Assert.True(vsQuantized < 1e-9);
        Assert.True(vsBase > 0, "NF4 export left the weights unchanged");
        Assert.Contains(report.Tensors, t => t.Name.EndsWith(dq ? ".weight.nested_quant_map" : ".weight.quant_map", StringComparison.Ordinal));
    }

    [Fact]
    public void Nf4ExportOfAMergedLoraReportsTheRequantizationError()
    {
        using var dir = new TempDir();
        var adapter = RandomLora(Base.Config, 31, baseQuant: new BaseQuant("nf4-dq", 64));
        var report = Run(dir.File("nf4"), ExportFormat.Safetensors, ExportDType.Nf4Dq, adapter);
        var merged = AdapterMerge.MergeDense(Base.Config, Base.Weights, adapter, MergeFrom.Dequantized);
        var (hc, hw) = ModelTensors.ToLayout(merged.Config, merged.Weights, RopeLayout.RotateHalf);
        double expected = 0;
        foreach (var layer in hw.Layers)
            foreach (var t in ModelTensors.LinearKinds)
            {
                var (o, i) = hc.LinearShape(t);
                float[] w = ModelTensors.Linear(layer, t);
                expected = Math.Max(expected, MaxAbsDiff(QuantizedLinearWeight.Bnb4Bit(w, o, i, QuantType.Nf4, 64, true).Dequantize(), w));
            }
        Assert.Equal(expected, report.MaxAbsWeightError);
        double logits = MaxAbsDiff(Logits(ModelLoader.Load(dir.File("nf4"))), Logits(merged.Config, merged.Weights));
        output.WriteLine($"LoRA merged into the NF4-DQ base, re-quantized to NF4-DQ: max weight error {expected:E3}, max |Δlogit| vs float merge {logits:E3}");
        Assert.True(expected > 0 && logits > 0);
    }

    [Fact]
    public void ReadingA4BitWeightDecodesWithTheFilesOwnNestedMap()
    {
        // An older export (or another writer) whose nested_quant_map is the reference vectors' double-computed map, with
        // absmax codes made for that map: reading it must use the stored map, not vkpeft's (they differ in 22 entries).
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Support.SharedData.Fixture("nf4_golden.json")));
        var c = golden.RootElement.GetProperty("cases")[0];
        int[] shape = [.. c.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
        float[] input = [.. c.GetProperty("input_f32").EnumerateArray().Select(e => (float)e.GetDouble())];
        float[] storedMap = [.. golden.RootElement.GetProperty("dynamic_map_signed").EnumerateArray().Select(e => (float)e.GetDouble())];
        var q = Bnb4BitCodec.Quantize(input, 64, QuantType.Nf4, "w");
        var dq = DoubleQuant.Quantize(q.Absmax, (float)c.GetProperty("offset_f32").GetDouble(), storedMap);
        var entries = QuantizedSafeTensors.Bnb4BitEntries("w.weight", QuantizedLinearWeight.FromBnb4Bit(q, shape[0], shape[1], dq), "float32")
            .Select(e => e.Name == "w.weight.nested_quant_map" ? SafeTensorsWriter.FromFloat32(e.Name, [256], storedMap) : e).ToList();
        using var dir = new TempDir();
        SafeTensorsWriter.Write(dir.File("model.safetensors"), entries);

        var absmax = new float[dq.Count];
        DoubleQuant.Dequantize(dq, storedMap, absmax);
        var expected = new float[input.Length];
        Bnb4BitCodec.Dequantize(q.Packed, absmax, q.Count, 64, QuantType.Nf4, expected);
        float[] read;
        using (var set = SafeTensorsSet.Open(dir.File("model.safetensors")))
            read = QuantizedSafeTensors.ReadBnb4Bit(set, "w.weight", shape);
        Assert.Equal(expected, read);
        float[] withVkpeftMap = new float[dq.Count];
        DoubleQuant.Dequantize(dq, withVkpeftMap);
        Assert.NotEqual(absmax, withVkpeftMap);   // the map matters for these codes: the test can tell the maps apart
    }

    [Fact]
    public void BnbSerializationReproducesGoldenBytes()
    {
        // Packed codes from the NF4 reference vectors; the double quantization (absmax codes, nested absmax, offset) and
        // the nested_quant_map as bitsandbytes computes them in float32 (nf4_dq_bnb_golden.json, bnb_dynamic_map.txt).
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Support.SharedData.Fixture("nf4_golden.json")));
        using var bnbGolden = JsonDocument.Parse(File.ReadAllBytes(Support.SharedData.Fixture("nf4_dq_bnb_golden.json")));
        for (int caseIndex = 0; caseIndex < 2; caseIndex++)
        {
            var c = golden.RootElement.GetProperty("cases")[caseIndex];
            var bnb = bnbGolden.RootElement.GetProperty("cases")[caseIndex];
            int[] shape = [.. c.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
            float[] input = [.. c.GetProperty("input_f32").EnumerateArray().Select(e => (float)e.GetDouble())];
            var q = QuantizedLinearWeight.Bnb4Bit(input, shape[0], shape[1], QuantType.Nf4, 64, doubleQuant: true);
            var entries = QuantizedSafeTensors.Bnb4BitEntries("w.weight", q, "float32").ToDictionary(e => e.Name);
            Assert.Equal(["w.weight", "w.weight.absmax", "w.weight.quant_map", "w.weight.nested_absmax", "w.weight.nested_quant_map", "w.weight.quant_state.bitsandbytes__nf4"],
                entries.Keys.ToArray());
            var packed = entries["w.weight"];
            Assert.Equal("U8", packed.DType);
            Assert.Equal(new long[] { (shape[0] * shape[1] + 1) / 2, 1 }, packed.Shape);
            Assert.Equal(c.GetProperty("packed_hex").GetString(), Convert.ToHexStringLower(packed.Data));
            Assert.Equal("U8", entries["w.weight.absmax"].DType);
            Assert.Equal(bnb.GetProperty("absmax_q_hex").GetString(), Convert.ToHexStringLower(entries["w.weight.absmax"].Data));
            float[] nested = [.. bnb.GetProperty("nested_absmax_f32_bits").EnumerateArray().Select(e => Quant.QuantTestData.FromBits(e.GetString()!))];
            Assert.Equal(nested.SelectMany(BitConverter.GetBytes).ToArray(), entries["w.weight.nested_absmax"].Data);
            Assert.Equal(16 * 4, entries["w.weight.quant_map"].Data.Length);
            Assert.Equal(Quant.QuantTestData.BnbDynamicMap.SelectMany(BitConverter.GetBytes).ToArray(), entries["w.weight.nested_quant_map"].Data);
            float offset = Quant.QuantTestData.FromBits(bnb.GetProperty("offset_f32_bits").GetString()!);
            string json = System.Text.Encoding.UTF8.GetString(entries["w.weight.quant_state.bitsandbytes__nf4"].Data);
            Assert.Equal($"{{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [{shape[0]}, {shape[1]}], " +
                $"\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": {QuantizedSafeTensors.PythonFloat(offset)}}}", json);
            using var state = JsonDocument.Parse(json);
            Assert.Equal(offset, (float)state.RootElement.GetProperty("nested_offset").GetDouble());
        }
        Assert.Equal("1e-05", QuantizedSafeTensors.PythonFloat(1e-5));
        Assert.Equal("0.0001", QuantizedSafeTensors.PythonFloat(1e-4));
        Assert.Equal("1.0", QuantizedSafeTensors.PythonFloat(1.0));
        Assert.Equal("0.012345", QuantizedSafeTensors.PythonFloat(0.012345));
        Assert.Equal("1e+16", QuantizedSafeTensors.PythonFloat(1e16));
        Assert.Equal("1000000000000000.0", QuantizedSafeTensors.PythonFloat(1e15));
        Assert.Equal("-2.5e-07", QuantizedSafeTensors.PythonFloat(-2.5e-7));
        Assert.Equal("0.0", QuantizedSafeTensors.PythonFloat(0));
        Assert.Equal("0.1", QuantizedSafeTensors.PythonFloat(0.1));
        Assert.Equal("123.456", QuantizedSafeTensors.PythonFloat(123.456));
    }

    [Fact]
    public void GgufF32IsExactAndParsesWithTheIndependentReader()
    {
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        var report = Run(path, ExportFormat.Gguf, ExportDType.F32);
        Assert.Empty(report.Fallbacks);
        var m = ModelLoader.Load(path);
        Assert.Equal(ModelSourceFormat.Gguf, m.Source.Format);
        Assert.NotNull(m.Tokenizer);
        Assert.Equal(Base.Tokenizer!.Encode("Once upon a time"), m.Tokenizer!.Encode("Once upon a time"));
        // GGUF stores eps as f32; with that eps the logits are bit-identical (same layout, same f32 weights).
        var expected = Logits(Base.Config with { RmsNormEps = (float)Base.Config.RmsNormEps }, Base.Weights);
        Assert.Equal(0.0, MaxAbsDiff(Logits(m), expected));

        var g = MiniGguf.Read(path);
        Assert.Equal(3u, g.Version);
        g.CheckLayout();
        Assert.Equal("llama", g.Kvs["general.architecture"].Value);
        Assert.Equal("model", g.Kvs["general.type"].Value);
        foreach (var key in new[] { "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
                     "attention.head_count_kv", "rope.dimension_count", "vocab_size" })
            Assert.Equal(4u, g.Kvs["llama." + key].Type);
        Assert.Equal(6u, g.Kvs["llama.attention.layer_norm_rms_epsilon"].Type);
        Assert.Equal(6u, g.Kvs["llama.rope.freq_base"].Type);
        Assert.Equal((uint)Base.Config.Dim, g.Kvs["llama.embedding_length"].Value);
        Assert.Equal("llama", g.Kvs["tokenizer.ggml.model"].Value);
        var tokens = ((uint, object[]))g.Kvs["tokenizer.ggml.tokens"].Value;
        Assert.Equal((8u, Base.Config.VocabSize), (tokens.Item1, tokens.Item2.Length));
        Assert.Equal(4u, g.Kvs["tokenizer.ggml.bos_token_id"].Type);
        var types = ((uint, object[]))g.Kvs["tokenizer.ggml.token_type"].Value;
        Assert.Equal(5u, types.Item1);
        // llama.cpp's llama2.c converter names ids 0/1/2 <unk>, <s>, </s> (types unknown 2, control 3, control 3); the
        // llama2.c vocabulary's own texts ("\n<s>\n") make llama.cpp warn that EOS is not an end-of-generation token.
        var firstTexts = tokens.Item2.Take(3).ToArray();
        var firstTypes = types.Item2.Take(3).ToArray();
        Assert.True(new object[] { "<unk>", "<s>", "</s>" }.SequenceEqual(firstTexts),
            $"token texts 0..2 are {string.Join(", ", firstTexts.Select(t => $"'{t}'"))}, expected '<unk>', '<s>', '</s>'");
        Assert.True(new object[] { 2, 3, 3 }.SequenceEqual(firstTypes),
            $"token types 0..2 are {string.Join(", ", firstTypes)}, expected 2, 3, 3 (unknown, control, control)");
        Assert.Equal(6, types.Item2[3 + 0x41]);   // <0x41>: a byte token
        Assert.Equal(1, types.Item2[^1]);         // the last merge: a normal token
        Assert.Equal(0u, Convert.ToUInt32(g.Kvs["tokenizer.ggml.unknown_token_id"].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.DoesNotContain(g.Infos, t => t.Name == "output.weight");
        var embd = g.Infos.Single(t => t.Name == "token_embd.weight");
        Assert.Equal(new ulong[] { (ulong)Base.Config.Dim, (ulong)Base.Config.VocabSize }, embd.Ne);
        Assert.Equal(Base.Weights.TokenEmbedding, g.Decode(embd));
        Assert.Equal(Base.Weights.Layers[2].Wq, g.Decode(g.Infos.Single(t => t.Name == "blk.2.attn_q.weight")));
        Assert.Equal(Base.Weights.Layers[3].WDown, g.Decode(g.Infos.Single(t => t.Name == "blk.3.ffn_down.weight")));
    }

    [Theory]
    [InlineData(ExportDType.F16)]
    [InlineData(ExportDType.Q8_0)]
    [InlineData(ExportDType.Q4_0)]
    [InlineData(ExportDType.Q4_1)]
    public void GgufQuantizedFallsBackPerTensorAndAgreesWithTheIndependentReader(ExportDType dtype)
    {
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        var report = Run(path, ExportFormat.Gguf, dtype);
        output.WriteLine(report.Summary());
        bool quantized = dtype != ExportDType.F16;
        // hidden_dim 172 is not a multiple of 32: exactly the ffn_down weights (row length 172) fall back to F16.
        Assert.Equal(quantized ? Base.Config.NLayers : 0, report.Fallbacks.Count);
        Assert.All(report.Fallbacks, f => Assert.Matches(@"^blk\.\d+\.ffn_down\.weight$", f.Tensor));
        Assert.Equal(quantized, report.MaxAbsWeightError is > 0);

        var ours = GgufFile.Open(path);
        var mini = MiniGguf.Read(path);
        mini.CheckLayout();
        Assert.Equal(ours.Tensors.Select(t => (t.Name, (uint)t.Type)), mini.Infos.Select(t => (t.Name, t.Type)));
        foreach (var t in mini.Infos)
            Assert.True(ours.ReadFloat32(t.Name).SequenceEqual(mini.Decode(t)), $"{t.Name} decodes differently");
        Assert.Equal(0u, mini.Infos.Single(t => t.Name == "blk.0.attn_norm.weight").Type);
        uint fileType = (uint)mini.Kvs["general.file_type"].Value;
        Assert.Equal(dtype switch { ExportDType.F16 => 1u, ExportDType.Q8_0 => 7u, ExportDType.Q4_0 => 2u, _ => 3u }, fileType);
        Assert.Equal(quantized, mini.Kvs.ContainsKey("general.quantization_version"));

        // Loaded back: every tensor is what both decoders read; the logits are the f32 base's up to quantization.
        var m = ModelLoader.Load(path);
        Assert.Equal(ours.ReadFloat32("blk.1.ffn_gate.weight"), m.Weights.Layers[1].WGate);
        double err = MaxAbsDiff(Logits(m), BaseLogits.Value);
        output.WriteLine($"gguf {dtype}: max weight error {report.MaxAbsWeightError:E3}, max |Δlogit| vs f32 base {err:E3}");
        Assert.True(err > 0 && err < (dtype switch { ExportDType.F16 => 5e-2, ExportDType.Q8_0 => 0.5, _ => 10.0 }));
    }

    [Fact]
    public void GgufFromRotateHalfSourcePermutesBackToTheOriginalRows()
    {
        using var dir = new TempDir();
        Run(dir.File("hf"), ExportFormat.Safetensors, ExportDType.F32);
        var hf = ModelLoader.Load(dir.File("hf"));
        Exporter.Export(hf, null, new ExportOptions { Format = ExportFormat.Gguf, OutPath = dir.File("m.gguf") });
        var m = ModelLoader.Load(dir.File("m.gguf"));
        for (int l = 0; l < Base.Config.NLayers; l++)
        {
            Assert.Equal(Base.Weights.Layers[l].Wq, m.Weights.Layers[l].Wq);
            Assert.Equal(Base.Weights.Layers[l].Wk, m.Weights.Layers[l].Wk);
        }
    }

    [Fact]
    public void Llama2cExportOfAMergedLoraGivesTheMergedLogits()
    {
        using var dir = new TempDir();
        var adapter = RandomLora(Base.Config, 7);
        string path = dir.File("merged.bin");
        var report = Run(path, ExportFormat.Llama2c, ExportDType.F32, adapter);
        Assert.True(File.Exists(dir.File("tokenizer.bin")));
        var m = ModelLoader.Load(path);
        Assert.Equal(ModelSourceFormat.Llama2cV0, m.Source.Format);
        Assert.NotNull(m.Tokenizer);
        var merged = AdapterMerge.MergeDense(Base.Config, Base.Weights, adapter, MergeFrom.Dequantized);
        Assert.Equal(0.0, MaxAbsDiff(Logits(m), Logits(merged.Config, merged.Weights)));
        Assert.True(MaxAbsDiff(Logits(m), BaseLogits.Value) > 1e-3, "the adapter changed nothing");
        Assert.Contains(report.Notes, n => n.Contains("shared classifier", StringComparison.Ordinal));
    }

    [Fact]
    public void MergeAddsScalingTimesBAToTheDequantizedOrOriginalBase()
    {
        var c = Base.Config;
        var adapter = RandomLora(c, 11, targets: [TargetModule.V, TargetModule.Down], rsLora: true);
        var a = adapter.Tensors[AdapterWeights.LoraA(1, TargetModule.Down)];
        var b = adapter.Tensors[AdapterWeights.LoraB(1, TargetModule.Down)];
        var (outF, inF) = c.LinearShape(TargetModule.Down);
        float[] w = Base.Weights.Layers[1].WDown;
        float[] nf4 = QuantizedLinearWeight.Bnb4Bit(w, outF, inF, QuantType.Nf4, 64, false).Dequantize();
        var fromDequant = AdapterMerge.MergeDense(c, Base.Weights, adapter, MergeFrom.Dequantized).Weights.Layers[1].WDown;
        var fromOriginal = AdapterMerge.MergeDense(c, Base.Weights, adapter, MergeFrom.Original).Weights.Layers[1].WDown;
        double scaling = 8 / Math.Sqrt(4);
        foreach (var (o, i) in new[] { (0, 0), (5, 171), (63, 100) })
        {
            double delta = 0;
            for (int k = 0; k < 4; k++) delta += (double)b.Data[o * 4 + k] * a.Data[k * inF + i];
            Assert.Equal((float)(nf4[o * inF + i] + scaling * delta), fromDequant[o * inF + i]);
            Assert.Equal((float)(w[o * inF + i] + scaling * delta), fromOriginal[o * inF + i]);
        }
        Assert.Same(Base.Weights.Layers[1].Wq, AdapterMerge.MergeDense(c, Base.Weights, adapter, MergeFrom.Original).Weights.Layers[1].Wq);
    }

    [Fact]
    public void ExistingOutputIsNotOverwrittenWithoutForce()
    {
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        File.WriteAllText(path, "keep me");
        var e = Assert.Throws<ExportException>(() => Run(path, ExportFormat.Gguf, ExportDType.F32));
        Assert.Contains("already exists", e.Message, StringComparison.Ordinal);
        Assert.Equal("keep me", File.ReadAllText(path));
        Exporter.Export(Base, null, new ExportOptions { Format = ExportFormat.Gguf, OutPath = path, Force = true });
        Assert.Equal(ModelSourceFormat.Gguf, ModelLoader.Load(path).Source.Format);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp-*"));

        Directory.CreateDirectory(dir.File("hf"));
        Assert.Throws<ExportException>(() => Run(dir.File("hf"), ExportFormat.Safetensors, ExportDType.F32));
    }

    [Fact]
    public void InvalidCombinationsGiveClearErrors()
    {
        using var dir = new TempDir();
        var bottleneck = RandomBottleneck(Base.Config, 3);
        var e = Assert.Throws<ExportException>(() => Run(dir.File("m.gguf"), ExportFormat.Gguf, ExportDType.F32, bottleneck));
        Assert.Contains("bottleneck adapters cannot be merged", e.Message, StringComparison.Ordinal);
        Assert.Throws<ExportException>(() => Run(dir.File("hf"), ExportFormat.Safetensors, ExportDType.Nf4, bottleneck));
        Assert.Throws<ExportException>(() => Run(dir.File("m2.gguf"), ExportFormat.Gguf, ExportDType.Nf4));
        Assert.Throws<ExportException>(() => Run(dir.File("m.bin"), ExportFormat.Llama2c, ExportDType.F16));
        Assert.Throws<ExportException>(() => Run(dir.File("p"), ExportFormat.Peft, ExportDType.F32));
        Assert.False(File.Exists(dir.File("m.gguf")));
        Assert.Equal(ExportDType.Nf4Dq, ExportOptions.ParseDType("nf4-dq"));
        Assert.Equal(ExportFormat.GgufLora, ExportOptions.ParseFormat("gguf-lora"));
        Assert.Throws<SettingException>(() => ExportOptions.ParseDType("q5_k"));
    }
}
