// The packed trainable-parameter layout (flat buffers, one dispatch per optimizer phase) against one buffer set per
// tensor: gradient norms, parameters and AdamW moments equal bit for bit over several steps, with the moments on the
// device or in host memory, the norm within fp32 rounding of float64 over several partial sums; and the dispatch count
// of one optimizer step.
using VkPeft.Peft.Training;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

[Collection("gpu")]
public sealed class PackedParametersTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;

    // LoRA-like shapes of awkward sizes, including one of a single element, and one of 10,055 elements: the gradient norm
    // spreads it over ceil(10,055 / 4,096) = 3 partial sums, chunks that end inside the smaller tensors.
    private static readonly (string Name, long[] Shape)[] Shapes =
        [("a0", [4, 37]), ("b0", [53, 4]), ("s", [1]), ("a1", [7, 300]), ("b1", [129, 7]), ("v", [65]), ("w", [5, 2011])];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PackedStepsEqualPerTensorStepsBitForBit(bool optimizerOnHost)
    {
        var place = optimizerOnHost ? MemoryPlace.Host : MemoryPlace.Device;
        using var packed = Build(ParameterLayout.Packed, place);
        using var perTensor = Build(ParameterLayout.PerTensor, place);
        var settings = new AdamWSettings(Lr: 1e-2, WeightDecay: 0.1);
        for (int step = 1; step <= 4; step++)
        {
            packed.ZeroGrads();
            perTensor.ZeroGrads();
            for (int i = 0; i < Shapes.Length; i++)
            {
                var g = TestData.Normal((int)Count(Shapes[i].Shape), 1000 * step + i, step == 2 ? 3f : 0.05f);
                packed.ByName[Shapes[i].Name].Grad!.Upload<float>(g);
                perTensor.ByName[Shapes[i].Name].Grad!.Upload<float>(g);
            }
            double normPacked = packed.GradNorm(), normPerTensor = perTensor.GradNorm();
            Assert.Equal(BitConverter.DoubleToInt64Bits(normPerTensor), BitConverter.DoubleToInt64Bits(normPacked));
            // fp32 sums of at most 10,055 squares against the float64 norm: relative error well under 1e-5.
            double exact = Math.Sqrt(Enumerable.Range(0, Shapes.Length)
                .Sum(i => TestData.Normal((int)Count(Shapes[i].Shape), 1000 * step + i, step == 2 ? 3f : 0.05f).Sum(x => (double)x * x)));
            Assert.True(Math.Abs(normPacked - exact) <= 1e-5 * exact, $"step {step}: norm {normPacked} vs float64 {exact}");
            float scale = normPacked > 1 ? (float)(1 / normPacked) : 1f;   // step 2 clips
            packed.Step(step, settings, scale);
            perTensor.Step(step, settings, scale);
        }
        Assert.Equal(3, packed.NormGroups());
        Assert.Equal(3, perTensor.NormGroups());
        foreach (var (name, _) in Shapes)
        {
            TrainableTensor p = packed.ByName[name], q = perTensor.ByName[name];
            Assert.Equal(q.Param.ToArray<float>(), p.Param.ToArray<float>());
            Assert.Equal(q.M!.ToArray<float>(), p.M!.ToArray<float>());
            Assert.Equal(q.V!.ToArray<float>(), p.V!.ToArray<float>());
        }
        var state = packed.OptimizerState();
        Assert.Equal(Shapes.Select(s => s.Name).Order(), state.Keys.Order());
    }

    [Fact]
    public void OnePackedOptimizerStepTakesFourDispatchesWhateverTheTensorCount()
    {
        using var packed = Build(ParameterLayout.Packed, MemoryPlace.Device);
        using var perTensor = Build(ParameterLayout.PerTensor, MemoryPlace.Device);
        Assert.Equal(4, DispatchesOfOneStep(packed));                      // zero, Σ g² of all slices, total, AdamW
        Assert.Equal(3 * Shapes.Length + 1, DispatchesOfOneStep(perTensor)); // zero, Σ g² and AdamW per tensor, total
    }

    private long DispatchesOfOneStep(TrainableParameters p)
    {
        long before = Ctx.Commands.TotalDispatches;
        p.ZeroGrads();
        double norm = p.GradNorm();
        p.Step(1, new AdamWSettings(), norm > 1 ? (float)(1 / norm) : 1f);
        return Ctx.Commands.TotalDispatches - before;
    }

    private TrainableParameters Build(ParameterLayout layout, MemoryPlace place)
    {
        var p = new TrainableParameters(Ctx, withOptimizer: true, place, layout);
        p.AddAll(Shapes.Select((s, i) => (s.Name, s.Shape, TestData.Normal((int)Count(s.Shape), i, 0.5f))).ToArray());
        return p;
    }

    private static long Count(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);
}
