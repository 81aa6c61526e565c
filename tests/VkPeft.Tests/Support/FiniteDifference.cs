// Central finite differences of a float64 reference loss against device gradients: the one check every trainable
// tensor's gradient test shares, with one stated tolerance.
namespace VkPeft.Tests.Support;

internal static class FiniteDifference
{
    private const double Step = 1e-5;

    /// <summary>(loss(v + h) − loss(v − h)) / 2h at element i of <paramref name="values"/>, which is restored afterwards.</summary>
    public static double At(double[] values, int i, Func<double> loss)
    {
        double keep = values[i];
        values[i] = keep + Step; double up = loss();
        values[i] = keep - Step; double down = loss();
        values[i] = keep;
        return (up - down) / (2 * Step);
    }

    /// <summary>
    /// Every element of <paramref name="gpu"/> against the finite difference of <paramref name="loss"/> in the matching
    /// element of <paramref name="values"/>. Bound: fp32 forward/backward of a loss of order 1 rounds to ~1e-6 absolute;
    /// 2e-5 absolute plus 2e-3 relative leaves room for accumulated rounding over sums of every output.
    /// </summary>
    public static void AssertMatches(string name, float[] gpu, double[] values, Func<double> loss)
    {
        for (int i = 0; i < values.Length; i++)
            AssertClose($"{name}[{i}]", gpu[i], At(values, i, loss));
    }

    /// <summary>A trainable tensor's device gradient <paramref name="grad"/>: not all zero, and every element as <see cref="AssertMatches"/>.</summary>
    public static void AssertGradient(string name, VkPeft.Runtime.Tensors.DeviceTensor grad, double[] values, Func<double> loss)
    {
        var g = grad.ToArray<float>();
        Assert.True(g.Any(x => x != 0), $"{name} received no gradient");
        AssertMatches(name, g, values, loss);
    }

    public static void AssertClose(string what, double gpu, double fd) =>
        Assert.True(Math.Abs(gpu - fd) <= 2e-5 + 2e-3 * Math.Abs(fd), $"{what}: gpu {gpu:G6} vs finite difference {fd:G6}");
}
