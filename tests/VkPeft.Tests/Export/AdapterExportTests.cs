// Adapter files: PEFT LoRA keys/shapes/config and the q/k row permutation, the vkpeft format for LoRA, QA-LoRA and
// bottleneck adapters, PEFT use_qalora exactness, GGUF LoRA fields, and clear errors for bad adapter folders.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Tests.Models;
using static VkPeft.Tests.Export.ExportTestSupport;

namespace VkPeft.Tests.Export;

public sealed class AdapterExportTests
{
    private static ExportReport Save(AdapterWeights a, string path, ExportFormat format, bool force = false) =>
        Exporter.Export(Base, a, new ExportOptions { Format = format, OutPath = path, Force = force });

    [Fact]
    public void PeftAdapterHasPeftKeysShapesAndConfig()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapter = RandomLora(c, 1, rank: 4, alpha: 8, rsLora: true);
        string outDir = dir.File("peft");
        Save(adapter, outDir, ExportFormat.Peft);

        using var cfg = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(outDir, "adapter_config.json")));
        var r = cfg.RootElement;
        Assert.Equal("LORA", r.GetProperty("peft_type").GetString());
        Assert.Equal("CAUSAL_LM", r.GetProperty("task_type").GetString());
        Assert.Equal(4, r.GetProperty("r").GetInt32());
        Assert.Equal(8.0, r.GetProperty("lora_alpha").GetDouble());
        Assert.True(r.GetProperty("use_rslora").GetBoolean());
        Assert.False(r.GetProperty("use_dora").GetBoolean());
        Assert.False(r.GetProperty("fan_in_fan_out").GetBoolean());
        Assert.True(r.GetProperty("inference_mode").GetBoolean());
        Assert.Equal("none", r.GetProperty("bias").GetString());
        Assert.Equal(new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
            r.GetProperty("target_modules").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.False(r.TryGetProperty("vkpeft", out _));

        using var f = SafeTensorsFile.Open(Path.Combine(outDir, "adapter_model.safetensors"));
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal("nf4", f.Metadata["vkpeft_base_quantization"]);
        Assert.Equal("64", f.Metadata["vkpeft_base_quantization_blocksize"]);
        Assert.Equal(2 * 7 * c.NLayers, f.Tensors.Count);
        foreach (var t in Enum.GetValues<TargetModule>())
        {
            var (outF, inF) = c.LinearShape(t);
            string prefix = $"base_model.model.model.layers.{c.NLayers - 1}.{AdapterConfig.HfPath(t)}";
            Assert.Equal(new long[] { 4, inF }, f.Info(prefix + ".lora_A.weight").Shape);
            Assert.Equal(new long[] { outF, 4 }, f.Info(prefix + ".lora_B.weight").Shape);
            Assert.Equal("F32", f.Info(prefix + ".lora_B.weight").DType);
        }
        Assert.True(f.Tensors.ContainsKey("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
        Assert.True(f.Tensors.ContainsKey("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"));

        // q/k rows of B are rotate-half: within each head of size d, HF row c·d/2+i = interleaved row 2i+c.
        int d = c.HeadDim;
        var bq = adapter.Tensors[AdapterWeights.LoraB(0, TargetModule.K)].Data;
        var fileB = f.ReadFloat32("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight");
        for (int h = 0; h < c.NKvHeads; h++)
            for (int cc = 0; cc < 2; cc++)
                for (int i = 0; i < d / 2; i++)
                    Assert.Equal(bq.AsSpan((h * d + 2 * i + cc) * 4, 4).ToArray(), fileB.AsSpan((h * d + cc * d / 2 + i) * 4, 4).ToArray());
        Assert.Equal(adapter.Tensors[AdapterWeights.LoraB(0, TargetModule.V)].Data, f.ReadFloat32("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"));
        Assert.Equal(adapter.Tensors[AdapterWeights.LoraA(0, TargetModule.Q)].Data, f.ReadFloat32("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    }

    [Fact]
    public void PeftRoundTripRestoresTheAdapterAndWorksOnARotateHalfBase()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapter = RandomLora(c, 2, targets: [TargetModule.Q, TargetModule.K, TargetModule.Up], rank: 2, alpha: 4);
        Save(adapter, dir.File("peft"), ExportFormat.Peft);
        var back = AdapterIO.Load(dir.File("peft"), c);
        SameTensors(adapter, back);
        var lora = back.Config.SettingsOf<LoraSettings>();
        Assert.Equal((PeftMethod.Lora, 2, 4f, false), (back.Config.Method, lora.Rank, lora.Alpha, lora.UseRsLora));
        Assert.Equal(adapter.Config.Targets, back.Config.Targets);
        Assert.Equal(adapter.Config.BaseQuant, back.Config.BaseQuant);

        // The same PEFT folder applied to the HF (rotate-half) export of the base gives the same merged model.
        Exporter.Export(Base, null, new ExportOptions { Format = ExportFormat.Safetensors, OutPath = dir.File("hf") });
        var hf = ModelLoader.Load(dir.File("hf"));
        var onHf = AdapterIO.Load(dir.File("peft"), hf.Config);
        var mergedHf = AdapterMerge.MergeDense(hf.Config, hf.Weights, onHf, MergeFrom.Original);
        var mergedBase = AdapterMerge.MergeDense(c, Base.Weights, adapter, MergeFrom.Original);
        Assert.True(MaxAbsDiff(Logits(mergedHf.Config, mergedHf.Weights), Logits(mergedBase.Config, mergedBase.Weights)) < 1e-9);
    }

    [Fact]
    public void VkPeftFormatRoundTripsLoraQaLoraAndBottleneck()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapters = new[]
        {
            RandomLora(c, 3, rsLora: true),
            RandomLora(c, 4, PeftMethod.QaLora, groupSize: 4, baseQuant: new BaseQuant("int4", 4)),
            RandomBottleneck(c, 5),
        };
        for (int k = 0; k < adapters.Length; k++)
        {
            string p = dir.File("vk" + k);
            Save(adapters[k], p, ExportFormat.VkPeft);
            Assert.True(File.Exists(Path.Combine(p, "vkpeft_adapter.json")));
            var back = AdapterIO.Load(p, c);
            SameTensors(adapters[k], back);
            var (e, a) = (adapters[k].Config, back.Config);
            Assert.Equal((e.Method, e.BaseQuant), (a.Method, a.BaseQuant));
            // The method's settings record: rank, alpha, rsLoRA, QA-LoRA's group size; bottleneck kind, size, activation, scale.
            Assert.Equal(e.Settings, a.Settings);
        }
        // PEFT has no bottleneck form.
        Assert.Throws<ExportException>(() => Save(adapters[2], dir.File("peft-bn"), ExportFormat.Peft));
    }

    [Fact]
    public void VkPeftAdapterMovesQkRowsToTheLoadingBasesLayout()
    {
        using var dir = new TempDir();
        var adapter = RandomLora(Base.Config, 6, targets: [TargetModule.Q, TargetModule.K]);
        Save(adapter, dir.File("vk"), ExportFormat.VkPeft);
        var rotateHalf = Base.Config with { RopeLayout = RopeLayout.RotateHalf };
        var onHf = AdapterIO.Load(dir.File("vk"), rotateHalf);
        var expected = QkPermutation.PermuteRows<float>(adapter.Tensors[AdapterWeights.LoraB(1, TargetModule.Q)].Data,
            rotateHalf.NHeads, rotateHalf.HeadDim, 4, RopeLayout.InterleavedPairs, RopeLayout.RotateHalf);
        Assert.Equal(expected, onHf.Tensors[AdapterWeights.LoraB(1, TargetModule.Q)].Data);
        Assert.NotEqual(expected, adapter.Tensors[AdapterWeights.LoraB(1, TargetModule.Q)].Data);
    }

    [Fact]
    public void QaLoraPeftFormIsWrittenOnlyWhenExact()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        // g = 16 on the 64-wide inputs: L = 4 groups, a power of two, so A/L is exact.
        var exact = RandomLora(c, 8, PeftMethod.QaLora, targets: [TargetModule.Q, TargetModule.V, TargetModule.Gate], groupSize: 16,
            baseQuant: new BaseQuant("int4", 16));
        Save(exact, dir.File("qa"), ExportFormat.Peft);
        using (var cfg = JsonDocument.Parse(File.ReadAllBytes(dir.File("qa/adapter_config.json"))))
        {
            Assert.True(cfg.RootElement.GetProperty("use_qalora").GetBoolean());
            Assert.Equal(16, cfg.RootElement.GetProperty("qalora_group_size").GetInt32());
        }
        using (var f = SafeTensorsFile.Open(dir.File("qa/adapter_model.safetensors")))
        {
            var a = f.ReadFloat32("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
            Assert.Equal(exact.Tensors[AdapterWeights.LoraA(0, TargetModule.Q)].Data.Select(v => v / 4).ToArray(), a);
        }
        SameTensors(exact, AdapterIO.Load(dir.File("qa"), c));
        // down_proj with g = 4: L = 172/4 = 43 groups; A/43 is not exact in float32, so PEFT's form is refused.
        var inexact = RandomLora(c, 9, PeftMethod.QaLora, targets: [TargetModule.Down], groupSize: 4, baseQuant: new BaseQuant("int4", 4));
        var e = Assert.Throws<ExportException>(() => Save(inexact, dir.File("qa2"), ExportFormat.Peft));
        Assert.Contains("43", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GgufLoraHasLlamaCppFieldsAndTheScaleOfOurScaling(bool rsLora)
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapter = RandomLora(c, 10, targets: [TargetModule.Q, TargetModule.Down], rank: 4, alpha: 6, rsLora: rsLora);
        string path = dir.File("lora.gguf");
        Save(adapter, path, ExportFormat.GgufLora);
        var g = MiniGguf.Read(path);
        g.CheckLayout();
        Assert.Equal("adapter", g.Kvs["general.type"].Value);
        Assert.Equal("llama", g.Kvs["general.architecture"].Value);
        Assert.Equal("lora", g.Kvs["adapter.type"].Value);
        var alpha = g.Kvs["adapter.lora.alpha"];
        Assert.Equal(6u, alpha.Type);
        // llama.cpp scale = alpha / rank, rank = lora_b ne[0].
        Assert.Equal(adapter.Config.SettingsOf<LoraSettings>().Scaling, (float)alpha.Value / 4, 6);
        Assert.Equal(rsLora ? 6 / 2f : 6 / 4f, adapter.Config.SettingsOf<LoraSettings>().Scaling);
        Assert.Equal(4 * c.NLayers, g.Infos.Count);
        var a = g.Infos.Single(t => t.Name == "blk.1.attn_q.weight.lora_a");
        var b = g.Infos.Single(t => t.Name == "blk.1.attn_q.weight.lora_b");
        Assert.Equal(new ulong[] { (ulong)c.Dim, 4 }, a.Ne);
        Assert.Equal(new ulong[] { 4, (ulong)c.QDim }, b.Ne);
        Assert.Equal((0u, 0u), (a.Type, b.Type));
        Assert.Equal(new ulong[] { 4, (ulong)c.Dim }, g.Infos.Single(t => t.Name == "blk.0.ffn_down.weight.lora_b").Ne);
        Assert.Equal(new ulong[] { (ulong)c.HiddenDim, 4 }, g.Infos.Single(t => t.Name == "blk.0.ffn_down.weight.lora_a").Ne);
        // Interleaved base → GGUF llama is interleaved too: A and B as they are.
        Assert.Equal(adapter.Tensors[AdapterWeights.LoraA(1, TargetModule.Q)].Data, g.Decode(a));
        Assert.Equal(adapter.Tensors[AdapterWeights.LoraB(1, TargetModule.Q)].Data, g.Decode(b));
        // Our reader parses it too.
        Assert.Equal("adapter", GgufFile.Open(path).GetString("general.type"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GgufLoraFromARotateHalfBaseMatchesTheGgufBaseMerge(bool rsLora)
    {
        // llama.cpp merges W_gguf + (alpha/rank)·B_gguf·A, reading only adapter.lora.alpha (it knows no rsLoRA); with an
        // HF base that must equal the GGUF export of our merge — for rsLoRA (scale alpha/√r, here 5/√3 against 5/3)
        // only because the export rewrites alpha to alpha·√r.
        using var dir = new TempDir();
        Exporter.Export(Base, null, new ExportOptions { Format = ExportFormat.Safetensors, OutPath = dir.File("hf") });
        var hf = ModelLoader.Load(dir.File("hf"));
        var adapter = RandomLora(hf.Config, 12, targets: [TargetModule.Q, TargetModule.K], rank: 3, alpha: 5, rsLora: rsLora);
        var report = Exporter.Export(hf, adapter, new ExportOptions { Format = ExportFormat.GgufLora, OutPath = dir.File("lora.gguf") });
        var g = MiniGguf.Read(dir.File("lora.gguf"));
        int rank = (int)g.Infos.Single(t => t.Name == "blk.0.attn_k.weight.lora_b").Ne[0];   // llama.cpp's rank: lora_b ne[0]
        float scale = (float)g.Kvs["adapter.lora.alpha"].Value / rank;
        Assert.Equal(rsLora ? 5 / MathF.Sqrt(3) : 5 / 3f, scale, 5);
        Assert.Equal(rsLora, report.Notes.Any(n => n.Contains("rsLoRA", StringComparison.Ordinal)));
        var merged = AdapterMerge.MergeDense(hf.Config, hf.Weights, adapter, MergeFrom.Original);
        var (_, mergedGguf) = ModelTensors.ToLayout(merged.Config, merged.Weights, RopeLayout.InterleavedPairs);
        var c = hf.Config;
        var la = g.Decode(g.Infos.Single(t => t.Name == "blk.0.attn_k.weight.lora_a"));
        var lb = g.Decode(g.Infos.Single(t => t.Name == "blk.0.attn_k.weight.lora_b"));
        var wk = Base.Weights.Layers[0].Wk;
        double max = 0;
        for (int o = 0; o < c.KvDim; o++)
            for (int i = 0; i < c.Dim; i++)
            {
                double delta = 0;
                for (int k = 0; k < 3; k++) delta += (double)lb[o * 3 + k] * la[k * c.Dim + i];
                max = Math.Max(max, Math.Abs(wk[o * c.Dim + i] + scale * delta - mergedGguf.Layers[0].Wk[o * c.Dim + i]));
            }
        Assert.True(max < 1e-6, $"llama.cpp-style merge differs by {max}");
    }

    [Fact]
    public void BadAdapterFoldersGiveErrorsNamingFileAndField()
    {
        using var dir = new TempDir();
        var c = Base.Config;
        var adapter = RandomLora(c, 13, targets: [TargetModule.Q, TargetModule.V]);
        string p = dir.File("peft");
        Save(adapter, p, ExportFormat.Peft);

        // Shape mismatch with a different base.
        var wider = c with { Dim = 128, HeadDim = 16 };
        var e1 = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, wider));
        Assert.EndsWith("adapter_model.safetensors", e1.File, StringComparison.Ordinal);
        Assert.Contains("q_proj.lora_A.weight", e1.Field, StringComparison.Ordinal);
        // Fewer layers in the base than in the adapter.
        var e2 = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, c with { NLayers = c.NLayers - 1 }));
        Assert.Contains($"layers.{c.NLayers - 1}.", e2.Field, StringComparison.Ordinal);
        // Unknown target.
        string cfgPath = Path.Combine(p, "adapter_config.json");
        string json = File.ReadAllText(cfgPath);
        File.WriteAllText(cfgPath, json.Replace("\"v_proj\"", "\"qkv_proj\"", StringComparison.Ordinal));
        var e3 = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, c));
        Assert.Equal(("target_modules", cfgPath), (e3.Field, e3.File));
        Assert.Contains("qkv_proj", e3.Message, StringComparison.Ordinal);
        // Corrupt JSON.
        File.WriteAllText(cfgPath, "{ not json");
        Assert.Equal(cfgPath, Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, c)).File);
        File.WriteAllText(cfgPath, json);
        // Truncated weights file.
        string weights = Path.Combine(p, "adapter_model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length - 10)]);
        var e4 = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, c));
        Assert.Equal(weights, e4.File);
        Assert.Contains("truncated", e4.Message, StringComparison.Ordinal);
        // Missing weights file.
        File.Delete(weights);
        var e5 = Assert.Throws<ModelFormatException>(() => AdapterIO.Load(p, c));
        Assert.Equal(weights, e5.File);
        // No config at all.
        Directory.CreateDirectory(dir.File("empty"));
        Assert.Throws<ModelFormatException>(() => AdapterIO.Load(dir.File("empty"), c));
        // Existing output without force.
        Assert.Throws<ExportException>(() => Save(adapter, p, ExportFormat.Peft));
        Save(adapter, p, ExportFormat.Peft, force: true);
        SameTensors(adapter, AdapterIO.Load(p, c));
    }
}
