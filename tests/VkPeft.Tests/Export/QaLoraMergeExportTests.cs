// The lossless QA-LoRA merge: INT4 safetensors export keeps codes and scales, shifts only the mins, dequantizes to
// base+ΔW within 1e-6 (relative to the tensor's range) and gives base+adapter logits; GGUF Q4_1 export with g = 32.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Quant;
using VkPeft.Tests.Models;
using Xunit.Abstractions;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class QaLoraMergeExportTests(ITestOutputHelper output)
{
    /// <summary>base INT4 (dequantized, float32) + ΔW computed independently in float64 from A and B, in the base layout.</summary>
    private static LlamaWeights ReferenceMerge(LlamaConfig c, AdapterWeights a, out Dictionary<(int, TargetModule), double[]> exact)
    {
        var cfg = a.Config;
        var qa = cfg.SettingsOf<QaLoraSettings>();
        var targets = cfg.Targets.ToHashSet();
        var ex = new Dictionary<(int, TargetModule), double[]>();
        var w = ModelTensors.WithLinears(Base.Weights, (l, t, w) =>
        {
            var (outF, inF) = c.LinearShape(t);
            float[] deq = QuantizedLinearWeight.Int4Group(w, outF, inF, qa.GroupSize).Dequantize();
            var sum = deq.Select(v => (double)v).ToArray();
            if (targets.Contains(t))
            {
                var A = a.Tensors[AdapterWeights.LoraA(l, t)];
                var B = a.Tensors[AdapterWeights.LoraB(l, t)];
                int groups = inF / qa.GroupSize;
                for (int o = 0; o < outF; o++)
                    for (int i = 0; i < inF; i++)
                    {
                        double pooled = 0;
                        for (int k = 0; k < qa.Rank; k++) pooled += (double)B.Data[o * qa.Rank + k] * A.Data[k * groups + i / qa.GroupSize];
                        sum[o * inF + i] += qa.Scaling * (1.0 / qa.GroupSize) * pooled;
                    }
            }
            ex[(l, t)] = sum;
            return sum.Select(v => (float)v).ToArray();
        });
        exact = ex;
        return w;
    }

    [Fact]
    public void Int4SafetensorsMergeShiftsOnlyTheMinsAndIsExact()
    {
        var c = Base.Config;
        var adapter = RandomLora(c, 21, PeftMethod.QaLora, groupSize: 4, rank: 4, alpha: 8, baseQuant: new BaseQuant("int4", 4));
        using var dir = new TempDir();
        string outDir = dir.File("int4");
        var report = Exporter.Export(Base, adapter, new ExportOptions { Format = ExportFormat.Safetensors, DType = ExportDType.Int4, OutPath = outDir });
        Assert.Contains(report.Notes, n => n.Contains("losslessly", StringComparison.Ordinal));
        Assert.Equal(0.0, report.MaxAbsWeightError);

        // Codes and scales are the base's INT4 quantization (in the HF row layout); only the mins moved.
        var (hc, hw) = ModelTensors.ToLayout(c, Base.Weights, RopeLayout.RotateHalf);
        using (var set = SafeTensorsSet.Open(Path.Combine(outDir, "model.safetensors")))
        {
            foreach (var (kind, t) in new[] { (LlamaTensorKind.Wq, TargetModule.Q), (LlamaTensorKind.WDown, TargetModule.Down) })
            {
                string name = HfCheckpoint.TensorName(kind, 1);
                var (outF, inF) = c.LinearShape(t);
                var baseQ = Int4GroupCodec.Quantize(ModelTensors.Linear(hw.Layers[1], t), outF, inF, 4);
                var stored = QuantizedSafeTensors.ReadInt4(set, name, [outF, inF], 4);
                Assert.Equal(baseQ.Packed, stored.Packed);
                Assert.Equal(baseQ.Scales, stored.Scales);
                Assert.NotEqual(baseQ.Mins, stored.Mins);
            }
        }

        var loaded = ModelLoader.Load(outDir);
        var reference = ReferenceMerge(c, adapter, out var exact);
        var (_, loadedInBase) = ModelTensors.ToLayout(loaded.Config, loaded.Weights, RopeLayout.InterleavedPairs);
        double worst = 0;
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in ModelTensors.LinearKinds)
            {
                float[] got = ModelTensors.Linear(loadedInBase.Layers[l], t);
                double[] want = exact[(l, t)];
                double range = want.Max(Math.Abs);
                for (int i = 0; i < got.Length; i++) worst = Math.Max(worst, Math.Abs(got[i] - want[i]) / range);
            }
        double logitErr = MaxAbsDiff(Logits(loaded), Logits(c, reference));
        output.WriteLine($"INT4 QA-LoRA merge: max |merged − (base+ΔW)| / max|W| = {worst:E3}; max |Δlogit| vs float64 merge = {logitErr:E3}");
        Assert.True(worst < 1e-6);
        Assert.True(logitErr < 1e-5);
        Assert.True(MaxAbsDiff(Logits(loaded), Logits(Base)) > 1e-3, "the adapter changed nothing");
    }

    [Fact]
    public void GgufQ4_1MergeKeepsTheInt4CodesWithFp16ScaleAndMin()
    {
        var c = Base.Config;
        var (adapter, targets) = QaLoraForQ4_1(22);
        using var dir = new TempDir();
        string path = dir.File("m.gguf");
        var report = Exporter.Export(Base, adapter, new ExportOptions { Format = ExportFormat.Gguf, DType = ExportDType.Q4_1, OutPath = path });
        output.WriteLine(report.Summary());
        Assert.NotNull(report.Q4_1Fp16Deviation);
        double dev = report.Q4_1Fp16Deviation!.Value;
        Assert.True(dev > 0 && dev < 1e-2);
        Assert.All(report.Fallbacks, f => Assert.Contains("ffn_down", f.Tensor, StringComparison.Ordinal));

        // Every Q4_1 block of a merged linear weight holds the INT4 codes; d and m are the fp16 scale and min'.
        var merged = QaLoraMerge.MergeInt4(c, Base.Weights, adapter);
        var q = merged.Int4![(2, TargetModule.Q)];
        var mini = MiniGguf.Read(path);
        var info = mini.Infos.Single(t => t.Name == "blk.2.attn_q.weight");
        Assert.Equal(3u, info.Type);
        float[] decoded = mini.Decode(info);
        double own = 0;
        for (int o = 0; o < q.OutFeatures; o++)
            for (int i = 0; i < q.InFeatures; i++)
            {
                int g = o * q.GroupsPerRow + i / 32, code = Nibbles.Get(q.Packed, (long)o * q.InFeatures + i);
                float expected = (float)(Half)q.Scales[g] * code + (float)(Half)q.Mins[g];
                Assert.Equal(expected, decoded[o * q.InFeatures + i]);
                own = Math.Max(own, Math.Abs((double)decoded[o * q.InFeatures + i] - (q.Scales[g] * code + q.Mins[g])));
            }
        Assert.True(own <= dev);

        // Loaded back, every merged linear weight is within that deviation of the merged INT4 weight (ffn_down: F16
        // rounding). With the same (generically Q4_1-quantized) token embedding, the logits match the merged model closely.
        var loaded = ModelLoader.Load(path);
        double linearErr = 0;
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in targets)
                linearErr = Math.Max(linearErr, MaxAbsDiff(ModelTensors.Linear(loaded.Weights.Layers[l], t), ModelTensors.Linear(merged.Weights.Layers[l], t)));
        Assert.Equal(dev, linearErr);
        var sameEmbedding = new LlamaWeights { TokenEmbedding = loaded.Weights.TokenEmbedding, Layers = merged.Weights.Layers, FinalNorm = merged.Weights.FinalNorm };
        double logitErr = MaxAbsDiff(Logits(loaded), Logits(merged.Config, sameEmbedding));
        output.WriteLine($"Q4_1 QA-LoRA export: fp16 d/m deviation {dev:E3}; max |Δlogit| vs merged INT4 model (same embedding) {logitErr:E3}");
        Assert.True(logitErr < 0.05);
    }

    [Fact]
    public void QaLoraExpandsToAnEquivalentPlainLora()
    {
        var c = Base.Config;
        var adapter = RandomLora(c, 23, PeftMethod.QaLora, groupSize: 4, baseQuant: new BaseQuant("int4", 4));
        var plain = QaLoraMerge.ExpandToLora(adapter, c);
        Assert.Equal(PeftMethod.Lora, plain.Config.Method);
        foreach (var t in ModelTensors.LinearKinds)
        {
            double[] d1 = AdapterMerge.Delta(adapter, c, 0, t), d2 = AdapterMerge.Delta(plain, c, 0, t);
            for (int i = 0; i < d1.Length; i++) Assert.Equal(d1[i], d2[i], 12);
        }
    }
}
