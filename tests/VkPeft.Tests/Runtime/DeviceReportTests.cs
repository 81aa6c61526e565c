// The device report `info --json` and `bench gpu-report` print: identity, features (cooperative-matrix shapes
// included) and the kernel path of each op with its reason.
using System.Text.Json.Nodes;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Runtime;

[Collection("gpu")]
public sealed class DeviceReportTests(GpuFixture gpu)
{
    [Fact]
    public void ReportNamesTheDeviceItsFeaturesAndEveryKernelPath()
    {
        var ctx = gpu.Context;
        var report = DeviceReport.Describe(ctx);
        Assert.Equal(ctx.Caps.Name, (string?)report["device"]!["name"]);
        Assert.Equal(ctx.Caps.ShaderFloat16, (bool)report["features"]!["shader_float16"]!);
        Assert.Equal(ctx.Caps.CooperativeMatricesNV.Length, report["features"]!["cooperative_matrices_nv"]!.AsArray().Count);
        var paths = report["kernel_paths"]!.AsArray();
        Assert.Equal(KernelPathReport.Describe(ctx).Count, paths.Count);
        Assert.All(paths, p => Assert.False(string.IsNullOrWhiteSpace((string?)p!["why"])));
        Assert.Contains(paths, p => (string?)p!["op"] == "cooperative matrices (input gradient)");
        Assert.False(string.IsNullOrEmpty((string?)report["device"]!["driver_source"]));
        Assert.IsType<JsonArray>(report["memory"]!["heaps"]);
    }
}
