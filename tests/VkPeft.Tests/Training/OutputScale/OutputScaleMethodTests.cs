// The method seam end to end with a method the library does not know: registered from this assembly with one line, the
// toy output (or input) scale trains through `vkpeft train`, saves, loads back (AdapterIO, `eval --adapter`), exports merged through
// `vkpeft export`, and its scalar's device gradient matches float64 central differences of the reference forward.
using System.Globalization;
using System.Text.Json.Nodes;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;
using static VkPeft.Tests.Cli.CliTests;

namespace VkPeft.Tests.Training.OutputScale;

[Collection("cli")]
public sealed class OutputScaleMethodTests : IDisposable
{
    static OutputScaleMethodTests() => PeftMethods.Register(OutputScaleMethod.Instance);   // the one registry line

    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-output-scale-").FullName;
    private static string Model => SharedData.Stories260K("stories260K.bin");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // Output side on up (an after-linear transform); input side on down (a before-linear transform whose backward reads
    // swiglu after the base's input gradient is formed: the trainer keeps the two apart). With and without checkpointing.
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void ScaleGradientMatchesFloat64FiniteDifferences(bool input, bool checkpointing)
    {
        var (target, kind) = input ? (TargetModule.Down, LlamaTensorKind.WDown) : (TargetModule.Up, LlamaTensorKind.WUp);
        using var ctx = new VulkanContext(GpuFixture.Options());
        var (c, w) = TinyModels.Random(11);
        var cfg = new AdapterConfig
        {
            Method = OutputScaleMethod.Instance, Targets = [target], Settings = new OutputScaleSettings(1.3f, input), BaseQuant = BaseQuant.None,
        };
        using var model = DeviceLlama.Load(ctx, c, w, BaseQuant.None);
        var reference = new ReferenceForward(c, w);
        using var p = new TrainableParameters(ctx, withOptimizer: true);
        cfg.Method.Initialize(p, c, cfg, seed: 3);
        var scales = new double[c.NLayers];
        for (int l = 0; l < c.NLayers; l++)
        {
            scales[l] = 1.3 - 0.5 * l;   // a distinct value per layer, one of them below 1
            p.ByName[OutputScaleMethod.ScaleName(l, target)].Param.Upload<float>([(float)scales[l]]);
        }
        using var runtime = (OutputScaleRuntime)cfg.Method.CreateRuntime(ctx, c, cfg, p, maxRows: 2 * 5);
        using var step = new TrainStep(model, runtime, batch: 2, seqLen: 5, checkpointing);
        int[] ids = [1, 5, 9, 2, 30, 7, 7, 3, 36, 0];
        int[] targets = [5, 9, 2, 30, -1, 7, 3, 36, 0, 11];
        int n = targets.Count(t => t >= 0);
        double gpuLoss = step.Run(ids, targets, 1f / n, seed: 1);

        if (input) reference.BeforeLinear = (l, k, x) => k == kind ? [.. x.Select(v => v * scales[l])] : x;
        else
            reference.AfterLinear = (l, k, x, y) =>
            {
                if (k != kind) return;
                for (int i = 0; i < y.Length; i++) y[i] *= scales[l];
            };
        double Loss() => TinyModels.ReferenceLoss(reference, ids, targets, seqLen: 5);
        double refLoss = Loss();
        // fp32 device forward against float64: a loss of order 1 agrees to ~1e-6; 1e-4 leaves room for accumulation order.
        Assert.True(Math.Abs(gpuLoss / n - refLoss) < 1e-4, $"loss {gpuLoss / n} vs reference {refLoss}");
        for (int l = 0; l < c.NLayers; l++)
        {
            double g = p.ByName[OutputScaleMethod.ScaleName(l, target)].Grad!.ToArray<float>()[0];
            double fd = FiniteDifference.At(scales, l, Loss);
            Assert.True(Math.Abs(fd) > 1e-4, $"layer {l}: the finite difference {fd} is too small to test anything");
            FiniteDifference.AssertClose($"layer {l}", g, fd);
        }
    }

    [Fact]
    public void TrainsSavesLoadsAndExportsThroughTheCommands()
    {
        var data = Path.Combine(_dir, "data.txt");
        File.WriteAllLines(data, Enumerable.Range(0, 20).Select(i => $"Pip pip hooray! Bo found a {(i % 2 == 0 ? "kite" : "bell")}. Pip pip hooray!"));
        var run = Path.Combine(_dir, "run");
        // The o-projection: inference then may not accumulate it into the residual stream in place (an output transform).
        var (code, output, err) = Run("train", "--model", Model, "--data", data, "--method", "output-scale", "--targets", "o", "--scale-init", "0.9",
            "--quant", "none", "--steps", "4", "--batch", "4", "--seq-len", "32", "--lr", "2e-2", "--out", run);
        Assert.True(code == 0, err + output);

        // Saved in its own object; loads back as the same method with trained scales.
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(run, AdapterIO.VkPeftConfigFile)))!;
        Assert.Equal("output-scale", json["method"]!.GetValue<string>());
        Assert.Equal(0.9, json["output_scale"]!["initial"]!.GetValue<double>(), 6);
        Assert.Equal("output", json["output_scale"]!["side"]!.GetValue<string>());
        var loaded = AdapterIO.Load(run, ModelLoader.Load(Model).Config);
        Assert.Same(OutputScaleMethod.Instance, loaded.Config.Method);
        var trained = loaded.Tensors.Values.Select(t => t.Data[0]).ToArray();
        Assert.Equal(ModelLoader.Load(Model).Config.NLayers, trained.Length);
        Assert.All(trained, s => Assert.True(Math.Abs(s - 0.9f) > 1e-4, $"scale {s} did not move from 0.9"));

        // Inference with the adapter equals the merged export (W' = s·W on an fp32 base, written as f32).
        double withAdapter = EvalNll("--model", Model, "--data", data, "--quant", "none", "--adapter", run);
        double baseNll = EvalNll("--model", Model, "--data", data, "--quant", "none");
        Assert.NotEqual(baseNll, withAdapter);
        var merged = Path.Combine(_dir, "merged.bin");
        (code, output, err) = Run("export", "--model", Model, "--adapter", run, "--format", "llama2c", "--dtype", "f32", "--merge-from", "original", "--out", merged);
        Assert.True(code == 0, err + output);
        double mergedNll = EvalNll("--model", merged, "--data", data, "--quant", "none");
        // Both run the same fp32 kernels; only s·W rounded once vs s·(x·W) differ: far below 1e-4 in mean NLL.
        Assert.True(Math.Abs(mergedNll - withAdapter) <= 1e-4, string.Create(CultureInfo.InvariantCulture, $"merged {mergedNll} vs base+adapter {withAdapter}"));

        // A format that cannot hold it says so in one line.
        (code, output, err) = Run("export", "--model", Model, "--adapter", run, "--format", "peft", "--out", Path.Combine(_dir, "peft"));
        Assert.NotEqual(0, code);
        Assert.Contains("output-scale", err + output);
        Assert.DoesNotContain("   at ", err + output);
    }
}
