// The analytic memory model against peaks measured from real training steps on the device (stories260K and two small
// random configurations), the quantized-weight byte formula, the catalog, and the plan and bench JSON shapes.
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Models;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Planning;

[Collection("gpu")]
public sealed class MemoryModelTests(GpuFixture gpu)
{
    private static LlamaConfig Small(int dim, int hidden, int layers, int heads, int kv, int vocab, bool tied) => new()
    {
        Dim = dim, HiddenDim = hidden, NLayers = layers, NHeads = heads, NKvHeads = kv, HeadDim = dim / heads, VocabSize = vocab,
        MaxSeqLen = 128, TiedClassifier = tied,
    };

    public static TheoryData<string> Cases => ["stories260K", "qalora-int4", "lora-nf4-untied", "offload-nf4-embeddings", "ia3-nf4", "lora-fa-nf4", "llama-adapter-nf4",
        "prompt-nf4", "prefix-nf4", "prefix-projection-nf4", "dora-nf4", "bias-nf4", "norm-nf4"];

    private static (TrainSetup Setup, LlamaWeights Weights) Case(string name) => name switch
    {
        "stories260K" => (new TrainSetup { Config = Stories260K.Config, Rank = 4, Batch = 2, SeqLen = 32, Checkpointing = false }, Stories260K.Weights),
        "qalora-int4" => Random(new TrainSetup
        {
            Config = Small(64, 192, 2, 4, 2, 300, true), Method = PeftMethod.QaLora, Quant = BaseQuant.Parse("int4", 32), GroupSize = 32, Rank = 8,
            Batch = 2, SeqLen = 16, Checkpointing = true,
        }),
        "offload-nf4-embeddings" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Rank = 4, Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
            Embeddings = EmbeddingFormat.Nf4, OffloadCheckpoints = true, OptimizerOnHost = true, Dropout = 0.1f,
        }),
        "lora-fa-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Rank = 8, FreezeA = true, Batch = 2, SeqLen = 24, Checkpointing = false, LogitRows = 16,
        }),
        "dora-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("dora"), Rank = 8, Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
        }),
        "ia3-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("ia3"), Targets = [TargetModule.K, TargetModule.V, TargetModule.Down],
            Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
        }),
        "bias-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("bias"), Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
        }),
        "norm-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("norm"), Batch = 2, SeqLen = 24, Checkpointing = false, LogitRows = 16,
        }),
        // Virtual tokens and prefixes ride as 6 and 5 extra rows per sequence: every activation grows with them.
        "prompt-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("prompt"), Targets = [],
            Settings = new VkPeft.Peft.Methods.Prompt.PromptSettings(6), Batch = 2, SeqLen = 24, Checkpointing = false, LogitRows = 16,
        }),
        "prefix-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("prefix"), Targets = [],
            Settings = new VkPeft.Peft.Methods.Prefix.PrefixSettings(5), Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
        }),
        // With the projection MLP (hidden 40): its tensors are the trainable ones, its scratch and computed prefix workspace.
        "prefix-projection-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("prefix"), Targets = [],
            Settings = new VkPeft.Peft.Methods.Prefix.PrefixSettings(5, Projection: true, HiddenSize: 40), Batch = 2, SeqLen = 24, Checkpointing = false, LogitRows = 16,
        }),
        "llama-adapter-nf4" => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Method = PeftMethods.Get("llama-adapter"), Targets = [],
            Batch = 2, SeqLen = 24, Checkpointing = true, LogitRows = 16,
        }),
        _ => Random(new TrainSetup
        {
            Config = Small(96, 256, 3, 6, 3, 1000, false), Quant = BaseQuant.Parse("nf4"), Rank = 4, Targets = [TargetModule.Q, TargetModule.V, TargetModule.Down],
            Batch = 1, SeqLen = 32, Checkpointing = false, LogitRows = 8,
        }),
    };

    private static (TrainSetup, LlamaWeights) Random(TrainSetup s) => (s, ModelCatalog.RandomWeights(s.Config, 5, 0.05f));

    [Theory]
    [Trait("Category", "Slow")]   // real training steps per case: ./vkpeft test --fast leaves it out
    [MemberData(nameof(Cases))]
    public void AnalyticModelMatchesMeasuredPeaksPerCategory(string name)
    {
        var (setup, weights) = Case(name);
        AssertModelMatchesMeasuredPeaks(name, setup, weights, GpuFixture.Options());
    }

    /// <summary>
    /// The shared-tiles matmuls (a GPU's path; lavapipe runs them with subgroup operations off) split LoRA's skinny
    /// products along K (in-features 512: two slices of 256) into a fixed scratch the step reserves: Workspace counts it.
    /// </summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void SplitKScratchIsChargedOnSharedTilesDevices()
    {
        var (setup, weights) = Random(new TrainSetup
        {
            Config = Small(512, 256, 1, 8, 4, 300, true), Rank = 8, Targets = [TargetModule.Q, TargetModule.Down], Batch = 2, SeqLen = 16,
            Checkpointing = false, LogitRows = 16,
        });
        var options = GpuFixture.Options() with { DisableSubgroupOps = true };
        using (var probe = new VulkanContext(options))
        {
            Assert.Equal(MatMulAlgorithm.SharedTiles, MatMul.Choose(probe));
            Assert.True(SplitK.Choose(1, 512, 32 * 8) > 1, "x·Aᵀ at 32 tokens, rank 8, in-features 512 splits K");
        }
        var est = AssertModelMatchesMeasuredPeaks("lora-shared-tiles", setup, weights, options);
        Assert.Contains(est.Items, i => i.Name == "split-K partials" && i.Bytes == SplitK.ScratchBytes);
        Assert.DoesNotContain(MemoryModel.Estimate(setup).Items, i => i.Name == "split-K partials");   // lanes devices have none
    }

    private static MemoryEstimate AssertModelMatchesMeasuredPeaks(string name, TrainSetup setup, LlamaWeights weights, RuntimeOptions options)
    {
        using var ctx = new VulkanContext(options);
        setup = setup.OnDevice(ctx);
        var measured = StepMeasurement.Run(ctx, setup, weights, steps: 1);
        var est = MemoryModel.Estimate(setup);
        foreach (var cat in Enum.GetValues<MemoryCategory>())
        {
            long m = measured.PeakByCategory[cat], a = est[cat];
            Assert.True(Math.Abs(m - a) <= Math.Max(0.10 * Math.Max(m, a), 64), $"{name} {cat}: measured {m} B, analytic {a} B");
        }
        Assert.InRange(measured.PeakLiveBytes, est.TotalBytes * 0.9, est.TotalBytes * 1.1);
        foreach (var cat in Enum.GetValues<MemoryCategory>())
        {
            long m = measured.HostPeakByCategory[cat], a = est.HostCategories[cat];
            Assert.True(Math.Abs(m - a) <= Math.Max(0.10 * Math.Max(m, a), 64), $"{name} host {cat}: measured {m} B, analytic {a} B");
        }
        Assert.True(double.IsFinite(measured.LastLoss));
        return est;
    }

    // LoRA-FA keeps A stored but drops its gradient and both AdamW moments: 3·4 bytes per A value less, nothing else.
    [Fact]
    public void FrozenAIsChargedNoGradientOrOptimizerState()
    {
        var lora = new TrainSetup { Config = Stories260K.Config, Rank = 4, Batch = 2, SeqLen = 32 };
        var fa = lora with { FreezeA = true };
        long aValues = lora.Method.Parameters(lora.Config, lora.ToAdapterConfig()).Where(p => p.Name.EndsWith("lora_a", StringComparison.Ordinal)).Sum(p => p.Count);
        Assert.True(aValues > 0);
        var (full, frozen) = (MemoryModel.Estimate(lora), MemoryModel.Estimate(fa));
        Assert.Equal(full[MemoryCategory.Trainable], frozen[MemoryCategory.Trainable]);
        Assert.Equal(full[MemoryCategory.Gradients] - 4 * aValues, frozen[MemoryCategory.Gradients]);
        Assert.Equal(full[MemoryCategory.Optimizer] - 8 * aValues, frozen[MemoryCategory.Optimizer]);
        Assert.Equal(MemoryModel.TrainableCount(lora) - aValues, MemoryModel.TrainableCount(fa));
    }

    [Fact]
    public void LinearBytesFollowDeviceQuantizedWeight()
    {
        var c = Small(96, 256, 1, 6, 3, 64, true);
        var w = ModelCatalog.RandomWeights(c, 2);
        foreach (var q in new[] { BaseQuant.Parse("nf4-dq"), BaseQuant.Parse("nf4"), BaseQuant.Parse("fp4-dq", 128), BaseQuant.Parse("int4", 32), BaseQuant.None })
        {
            using var model = DeviceLlama.Load(gpu.Context, c, w, q);
            foreach (var lin in model.Layers[0].Linears)
                Assert.Equal(lin.DeviceBytes, MemoryModel.LinearDeviceBytes(q, lin.OutFeatures, lin.InFeatures));
        }
    }

    [Fact]
    public void CatalogHasTheRealShapes()
    {
        var s = ModelCatalog.Get("stories260K");
        var real = Stories260K.Config;
        Assert.Equal((real.Dim, real.HiddenDim, real.NLayers, real.NHeads, real.NKvHeads, real.VocabSize), (s.Dim, s.HiddenDim, s.NLayers, s.NHeads, s.NKvHeads, s.VocabSize));
        foreach (var n in ModelCatalog.Names) ModelCatalog.Get(n).Validate(n);
        Assert.InRange(MemoryModel.ParameterCount(ModelCatalog.Get("llama-3.1-8b")), 8.0e9, 8.1e9);
        Assert.InRange(MemoryModel.ParameterCount(ModelCatalog.Get("llama-2-7b")), 6.7e9, 6.8e9);
        Assert.InRange(MemoryModel.ParameterCount(ModelCatalog.Get("tinyllama-1.1b")), 1.09e9, 1.11e9);
        var slice = ModelCatalog.RandomWeights(ModelCatalog.Slice(ModelCatalog.Get("stories260K"), 2, 100));
        Assert.Equal(2, slice.Layers.Length);
        Assert.Equal(100 * 64, slice.TokenEmbedding.Length);
    }

    [Fact]
    public void PlanJsonHasTheFitAndItsSwitches()
    {
        var setup = new TrainSetup { Config = ModelCatalog.Get("llama-3.1-8b"), SeqLen = 2048 };
        var plan = FitPlanner.Make(setup, 8L << 30);
        var json = FitPlanner.ToJson(plan, "llama-3.1-8b");
        int maxSeq = json["max_seq_len"]!.GetValue<int>();
        Assert.InRange(maxSeq, 2, 131072);
        Assert.True(json["max_batch"]!.GetValue<int>() >= 0);
        Assert.Contains(json["switches"]!.AsArray(), n => n!.GetValue<string>() == "checkpointing");
        // The switches and the message name settings: by their library names, or as flags when the CLI spells them.
        Assert.Contains($"at {VkPeft.Peft.Training.TrainSettings.SeqLen} 2048", json["message"]!.GetValue<string>(), StringComparison.Ordinal);
        var spelled = FitPlanner.ToJson(plan, "llama-3.1-8b", spell: VkPeft.Cli.SettingFlags.Spell);
        Assert.Contains("at --seq-len 2048", spelled["message"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Contains(spelled["switches"]!.AsArray(), n => n!.GetValue<string>() == $"chunked loss (--loss-chunk {plan.MaxSeq!.Option.LogitRows})");
        var chosen = plan.MaxSeq!.Option.Apply(setup);
        Assert.True(MemoryModel.Estimate(chosen with { SeqLen = maxSeq }).PeakBytes <= 8L << 30);
        Assert.True(MemoryModel.Estimate(chosen with { SeqLen = maxSeq + 64 }).PeakBytes > (8L << 30) - FitPlanner.MarginFor(8L << 30));

        var tiny = FitPlanner.Make(setup, 1L << 30);
        Assert.Null(tiny.MaxSeq);
        Assert.Contains("does not fit", tiny.Message.ToString());
    }

    [Fact]
    public void PlanCommandPrintsJson()
    {
        var writer = new StringWriter();
        var old = Console.Out;
        Console.SetOut(writer);
        try { Assert.Equal(0, VkPeft.Cli.CliApp.Run(["plan", "--config", "llama-3.2-1b", "--memory", "8GiB", "--json"])); }
        finally { Console.SetOut(old); }
        var json = JsonNode.Parse(writer.ToString())!;
        Assert.True(json["max_seq_len"]!.GetValue<int>() > 1000);
        Assert.True(json["max_batch"]!.GetValue<int>() >= 1);
        Assert.NotNull(json["switches"]!.AsArray());
    }

    [Fact]
    public void PlanCheckTrainsThePlanUnderTheBudget()
    {
        var writer = new StringWriter();
        var old = Console.Out;
        Console.SetOut(writer);
        try { Assert.Equal(0, VkPeft.Cli.CliApp.Run(["plan", "--config", "stories260K", "--memory", "6MiB", "--check", "--check-layers", "3", "--json"])); }
        finally { Console.SetOut(old); }
        var json = JsonNode.Parse(writer.ToString())!;
        var check = json["check"]!;
        Assert.True(check["honoured"]!.GetValue<bool>());
        Assert.Equal(json["max_seq_len"]!.GetValue<int>(), check["seq_len"]!.GetValue<int>());
        Assert.Equal(3, check["layers_run"]!.GetValue<int>());
        long slice = check["slice_budget_bytes"]!.GetValue<long>(), measured = check["measured_peak_reserved_bytes"]!.GetValue<long>();
        Assert.InRange(measured, 1, slice);
        Assert.Equal(6L << 20, slice + check["left_out_bytes"]!.GetValue<long>());
        Assert.True(check["extrapolated_peak_bytes"]!.GetValue<long>() <= 6L << 20);
        Assert.True(double.IsFinite(check["final_loss"]!.GetValue<double>()));
    }

    [Fact]
    public void BenchJsonOfASliceIsExtrapolatedAndMarked()
    {
        var full = new TrainSetup { Config = Small(64, 192, 4, 4, 2, 2000, false), Rank = 4, Batch = 1, SeqLen = 16, Checkpointing = false };
        using var ctx = new VulkanContext(GpuFixture.Options());
        full = full.OnDevice(ctx);
        long limit = MemoryModel.Estimate(full with { Config = ModelCatalog.Slice(full.Config, 2) }).PeakBytes;
        var r = MemoryBenchmark.Run(ctx, "small", full, null, limit, null, 1, null);
        Assert.Equal(2, r.Slice.Layers);
        var json = MemoryBenchmark.ToJson(r);
        Assert.False(json["measured"]!.GetValue<bool>());
        Assert.True(json["tokens_per_second"]!.GetValue<double>() > 0);
        long peak = json["peak_bytes"]!.GetValue<long>();
        var cats = json["categories"]!.AsObject();
        Assert.Equal(peak, cats.Sum(kv => kv.Value!.GetValue<long>()));
        Assert.InRange(peak, MemoryModel.Estimate(full).TotalBytes * 0.9, MemoryModel.Estimate(full).TotalBytes * 1.1);

        var names = MemoryBenchmark.ToJson(r, VkPeft.Cli.SettingFlags.Spell)["comparisons"]!.AsArray().Select(c => c!["name"]!.GetValue<string>()).ToList();
        Assert.Contains("fp32 base (--quant none)", names);
        Assert.Contains("layer inputs on the host (--offload-checkpoints)", names);

        var whole = MemoryBenchmark.Run(ctx, "small", full, null, 1L << 30, null, 1, null);
        Assert.True(MemoryBenchmark.ToJson(whole)["measured"]!.GetValue<bool>());
    }
}
