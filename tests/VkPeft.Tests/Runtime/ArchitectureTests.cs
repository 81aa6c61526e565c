// Dependencies point one way: quant ← runtime ← peft ← serve ← CLI; nothing references tests or bench.
using System.Reflection;

namespace VkPeft.Tests.Runtime;

public sealed class ArchitectureTests
{
    private static string[] Refs(Assembly a) => a.GetReferencedAssemblies().Select(r => r.Name!).Where(n => n.StartsWith("VkPeft", StringComparison.Ordinal) || n == "vkpeft").ToArray();

    [Fact]
    public void DependenciesPointOneWay()
    {
        var quant = typeof(VkPeft.Quant.QuantAssemblyMarker).Assembly;
        var runtime = typeof(VkPeft.Runtime.Vulkan.VulkanContext).Assembly;
        var peft = typeof(VkPeft.Peft.VkPeftInfo).Assembly;
        var serve = typeof(VkPeft.Serve.ServeHost).Assembly;
        var cli = typeof(VkPeft.Cli.Program).Assembly;
        Assert.Empty(Refs(quant));
        Assert.All(Refs(runtime), r => Assert.Equal("VkPeft.Quant", r));
        Assert.DoesNotContain(Refs(peft), r => r is "vkpeft" or "vkpeft-bench" or "VkPeft.Tests");
        Assert.DoesNotContain(Refs(peft), r => r is "VkPeft.Serve");
        Assert.DoesNotContain(Refs(serve), r => r is "vkpeft" or "vkpeft-bench" or "VkPeft.Tests");
        Assert.DoesNotContain(Refs(cli), r => r is "vkpeft-bench" or "VkPeft.Tests");
        Assert.DoesNotContain("VkPeft.Peft", Refs(runtime));
        Assert.DoesNotContain("VkPeft.Runtime", Refs(quant));
    }
}
