// The gathered LoRA kernels (lora_gathered.comp: shrink and expand, each row with its own adapter from padded pools,
// rows without one untouched) against the float64 reference, over sizes that are not multiples of the workgroup (256),
// block (64) or rank, with guard regions around the outputs.
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Reference;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.PeftKernels;

[Collection("gpu")]
public sealed class GatheredLoraTests(GpuFixture gpu)
{
    private VulkanContext Ctx => gpu.Context;
    private const double U = 5.96e-8;   // fp32 unit roundoff 2^-24

    public static TheoryData<int, int, int, int, int> Cases => new()
    {
        // rows M, in K, out N, padded rank R, adapters S
        { 1, 1, 1, 1, 1 }, { 67, 65, 257, 8, 3 }, { 5, 300, 7, 16, 5 }, { 515, 64, 129, 4, 2 }, { 3, 129, 65, 3, 4 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void GatheredShrinkAndExpandMatchTheReference(int m, int k, int n, int rank, int adapters)
    {
        var x = TestData.Normal(m * k, m + k);
        var aPool = TestData.Normal(adapters * rank * k, 7);
        var bPool = TestData.Normal(adapters * n * rank, 8);
        // The last adapter has a smaller true rank: its padded A rows and B columns are zero, as the pool stores them.
        int trueRank = Math.Max(1, rank - 2);
        int last = adapters - 1;
        for (int r = trueRank; r < rank; r++)
        {
            Array.Clear(aPool, (last * rank + r) * k, k);
            for (int o = 0; o < n; o++) bPool[(last * n + o) * rank + r] = 0;
        }
        // Every third row has no adapter; the others cycle through all of them in a scattered order.
        var rowAdapter = Enumerable.Range(0, m).Select(i => i % 3 == 2 ? -1 : (i * 7 + 1) % adapters).ToArray();
        // Each row's own scale (its adapter's scaling times its request's): rows of one adapter differ, one in five is 0.
        var scale = Enumerable.Range(0, m).Select(i => i % 5 == 4 ? 0f : 0.5f + rowAdapter[i] + 0.25f * (i % 4)).ToArray();
        var y0 = TestData.Normal(m * n, 9);

        using var tx = DeviceTensor.Create(Ctx, "x", DType.F32, [m, k], MemoryCategory.Workspace);
        using var ta = DeviceTensor.Create(Ctx, "a_pool", DType.F32, [adapters, rank, k], MemoryCategory.Workspace);
        using var tb = DeviceTensor.Create(Ctx, "b_pool", DType.F32, [adapters, n, rank], MemoryCategory.Workspace);
        using var ts = DeviceTensor.Create(Ctx, "scale", DType.F32, [m], MemoryCategory.Workspace);
        using var trows = DeviceTensor.Create(Ctx, "row_adapter", DType.I32, [m], MemoryCategory.Workspace);
        using var tt = Guarded.Create(Ctx, "t", m, rank);
        using var ty = Guarded.Create(Ctx, "y", m, n);
        tx.Upload<float>(x);
        ta.Upload<float>(aPool);
        tb.Upload<float>(bPool);
        ts.Upload<float>(scale);
        trows.Upload<int>(rowAdapter);
        ty.Upload(y0);

        GatheredLora.Shrink(tx, ta, trows.Reshape(m), tt.Tensor);
        GatheredLora.Expand(tt.Tensor, tb, ts, trows, ty.Tensor);
        var t = tt.Download();
        var y = ty.Download();

        static double[] D(float[] v) => [.. v.Select(f => (double)f)];
        var expected = GatheredLoraReference.Apply(D(x), D(aPool), D(bPool), D(scale), rowAdapter, D(y0), k, n, rank);
        for (int row = 0; row < m; row++)
        {
            int a = rowAdapter[row];
            if (a < 0)
            {
                for (int r = 0; r < rank; r++) Assert.True(t[row * rank + r] == 0, $"row {row} has no adapter: t must be 0");
                for (int o = 0; o < n; o++) Assert.True(y[row * n + o] == y0[row * n + o], $"row {row} has no adapter: y must be untouched");
                continue;
            }
            // |Σ_i a·x| sums per rank row bound the shrink's error: γ_K·Σ|a·x| (K sequential fp32 additions).
            var absT = new double[rank];
            for (int r = 0; r < rank; r++)
                for (int i = 0; i < k; i++) absT[r] += Math.Abs((double)aPool[(a * rank + r) * k + i] * x[row * k + i]);
            for (int o = 0; o < n; o++)
            {
                // Expand: the shrink's error carried through B (γ_K·Σ_r |b|·Σ|a·x|), R more additions (γ_R), the product
                // with the scale and the add to y (2u): ≤ |s|·(K + R + 2)·u·Σ_r |b_r|·Σ|a·x| + u·(|y| + |y0|), doubled for
                // the second-order terms and the fp32 rounding of the computed t.
                double carried = 0;
                for (int r = 0; r < rank; r++) carried += Math.Abs((double)bPool[(a * n + o) * rank + r]) * absT[r];
                double bound = 2 * (Math.Abs(scale[row]) * (k + rank + 2) * U * carried + U * (Math.Abs(expected[row * n + o]) + Math.Abs(y0[row * n + o]))) + 1e-30;
                double err = Math.Abs(y[row * n + o] - expected[row * n + o]);
                Assert.True(err <= bound, $"[{m},{k}]→[{m},{n}] R={rank}: y[{row},{o}] = {y[row * n + o]}, reference {expected[row * n + o]}, |error| {err:G3} > {bound:G3}");
            }
        }
    }

    [Fact]
    public void ShapeMistakesAreRefused()
    {
        using var x = DeviceTensor.Create(Ctx, "x", DType.F32, [4, 8], MemoryCategory.Workspace);
        using var a = DeviceTensor.Create(Ctx, "a_pool", DType.F32, [2, 3, 8], MemoryCategory.Workspace);
        using var rows = DeviceTensor.Create(Ctx, "rows", DType.I32, [4], MemoryCategory.Workspace);
        using var t = DeviceTensor.Create(Ctx, "t", DType.F32, [4, 2], MemoryCategory.Workspace);
        using var flat = DeviceTensor.Create(Ctx, "flat", DType.F32, [48], MemoryCategory.Workspace);
        Assert.Throws<ArgumentException>(() => GatheredLora.Shrink(x, a, rows, t));      // t should be [4, 3]
        Assert.Throws<ArgumentException>(() => GatheredLora.Shrink(x, flat, rows, t));   // the pool needs [adapters, rank, in]
        Assert.Throws<ArgumentException>(() => GatheredLora.Shrink(x, a, x, t));         // row adapters are int32
    }
}
