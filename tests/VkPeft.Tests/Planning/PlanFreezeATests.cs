// `vkpeft plan --freeze-a`: the planner counts LoRA-FA's savings (no A gradients or AdamW moments, A still stored),
// and refuses the switch for a method with no A to freeze.
using System.Text.Json.Nodes;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Planning;
using VkPeft.Runtime.Memory;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Planning;

[Collection("cli")]
public sealed class PlanFreezeATests
{
    private static JsonNode Plan(params string[] more)
    {
        var (code, output, err) = Run(["plan", "--config", "stories260K", "--memory", "48MiB", "--json", .. more]);
        Assert.True(code == 0, err + output);
        return JsonNode.Parse(output)!;
    }

    [Fact]
    public void FreezeACountsNoAGradientsOrMoments()
    {
        var lora = Plan()["max_seq"]!["categories"]!;
        var fa = Plan("--freeze-a")["max_seq"]!["categories"]!;
        long L(JsonNode n, MemoryCategory c) => n[c.ToString().ToLowerInvariant()]!.GetValue<long>();
        // A and B both stay stored; only B (r × out per target) has a gradient and two moments.
        var setup = TrainSetup.For(ModelCatalog.Get("stories260K"), PeftMethod.Lora, null, 8, Enum.GetValues<TargetModule>(), 64);
        long bValues = setup.Method.Parameters(setup.Config, setup.ToAdapterConfig()).Where(p => p.Name.EndsWith(".lora_b", StringComparison.Ordinal)).Sum(p => p.Count);
        long allValues = MemoryModel.TrainableCount(setup);
        Assert.True(bValues > 0 && bValues < allValues);
        Assert.Equal(L(lora, MemoryCategory.Trainable), L(fa, MemoryCategory.Trainable));
        Assert.Equal(L(lora, MemoryCategory.Gradients) - 4 * (allValues - bValues), L(fa, MemoryCategory.Gradients));
        Assert.Equal(L(lora, MemoryCategory.Optimizer) - 8 * (allValues - bValues), L(fa, MemoryCategory.Optimizer));
    }

    [Fact]
    public void FreezeAIsRefusedForAMethodWithoutA()
    {
        var (code, output, err) = Run("plan", "--config", "stories260K", "--memory", "48MiB", "--method", "ia3", "--freeze-a");
        Assert.NotEqual(0, code);
        Assert.Contains("--freeze-a: ia3", err + output);
        Assert.DoesNotContain("   at ", err + output);
    }
}
