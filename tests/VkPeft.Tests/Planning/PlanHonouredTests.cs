// The fit plan is a promise: training a random-weight model with the plan's longest sequence and switches under a
// memory budget stays below that budget on the device (measured by the arena), and one sequence more is refused.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Planning;

[Trait("Category", "Slow")]   // end-to-end or split-binding cases: ./vkpeft test --fast leaves them out
public sealed class PlanHonouredTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-plan-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TrainingWithThePlannedLengthStaysUnderTheBudget()
    {
        // TinyLlama's layer shapes (dim 2048, hidden 5632, GQA 32:4), one layer, a 2,000-token vocabulary.
        var c = ModelCatalog.Slice(ModelCatalog.Get("tinyllama-1.1b"), layers: 1, vocab: 2000);
        const long budget = 80L << 20;   // plans 289 tokens with every lever on (76 MiB is the least that fits; fewer tokens, less time)
        var setup = new TrainSetup { Config = c, Rank = 8, Batch = 1, SeqLen = 64 };
        var plan = FitPlanner.Make(setup, budget);
        Assert.NotNull(plan.MaxSeq);
        var option = plan.MaxSeq!.Option;
        int seq = plan.MaxSeq.Value;
        Assert.True(seq >= 16, $"planned {seq} tokens");

        using var ctx = new VulkanContext(GpuFixture.Options() with { MemoryBudget = budget, ArenaBlockSize = 1 << 20 });   // small blocks: little rounding slack in a small budget
        var w = ModelCatalog.RandomWeights(c, seed: 3);
        using var model = DeviceLlama.Load(ctx, c, w, BaseQuant.Parse("nf4-dq"), embeddingQuant: option.Embeddings == EmbeddingFormat.Nf4 ? BaseQuant.Parse("nf4-dq") : null);
        var rng = new Random(5);
        TrainWindow Window() => new([.. Enumerable.Range(0, seq).Select(_ => rng.Next(c.VocabSize))], [.. Enumerable.Range(0, seq).Select(_ => rng.Next(c.VocabSize))]);
        var data = TrainingData.FromWindows([Window(), Window()], []);
        var options = new TrainOptions
        {
            Data = "random", Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8 }, BaseQuant = new BaseQuant("nf4-dq", 64) },
            Quant = BaseQuant.Parse("nf4-dq"), Steps = 1, Batch = 1, SeqLen = seq, Checkpointing = option.Checkpointing, LogitRows = option.LogitRows,
            OffloadCheckpoints = option.OffloadCheckpoints, OptimizerOnHost = option.OptimizerOnHost, Out = Path.Combine(_dir, "run"), Lr = 1e-4f,
        };
        // One step (forward, backward, AdamW) reaches the peak: every buffer, AdamW's state included, exists from the first
        // step on. That later steps hold it with every lever on is MemoryModelTests' "offload-nf4-embeddings" case (two steps).
        using (var trainer = new Trainer(ctx, model, options, data))
        {
            var summary = trainer.Run();
            Assert.True(ctx.Arena.Accounting.PeakReservedBytes <= budget, $"reserved {ctx.Arena.Accounting.PeakReservedBytes} > budget {budget}");
            Assert.True(summary.PeakDeviceBytes <= budget);
            // The longest plan uses every lever; the offloaded state is in host memory as modelled.
            Assert.True(option.OffloadCheckpoints && option.OptimizerOnHost, option.Name);
            long hostModelled = MemoryModel.Estimate(option.Apply(setup) with { SeqLen = seq }).HostBytes;
            Assert.InRange(summary.PeakHostBytes, hostModelled, hostModelled + 4096);
        }
        // Twice the planned length does not fit: the trainer refuses it up front with the plan's advice.
        var tooLong = options with { SeqLen = 2 * seq, Out = Path.Combine(_dir, "long") };
        var e = Assert.Throws<DeviceMemoryBudgetException>(() => new Trainer(ctx, model, tooLong, TrainingData.FromWindows([Window()], [])));
        Assert.Contains("fit plan", e.Message);
    }
}
