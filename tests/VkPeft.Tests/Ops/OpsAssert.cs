// Per-element tolerance checks for the layer-op tests, reporting the worst error and how close it came to its bound.
using Xunit.Abstractions;

namespace VkPeft.Tests.Ops;

public static class OpsAssert
{
    /// <summary>fp32 unit roundoff (2⁻²⁴).</summary>
    public const double U = 1.0 / (1 << 24);

    /// <summary>Asserts |actual[i] − expected[i]| ≤ tol[i]; writes the largest error and largest error/tolerance to the log.</summary>
    public static void Within(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, Func<int, double> tol, string what, ITestOutputHelper? log = null)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = 0, worstRatio = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]), t = tol(i);
            if (!(err <= t)) Assert.Fail($"{what}: element {i} is {actual[i]:R}, expected {expected[i]:R} (|err| {err:G3} > tol {t:G3})");
            worst = Math.Max(worst, err);
            if (t > 0) worstRatio = Math.Max(worstRatio, err / t);
        }
        log?.WriteLine($"{what}: n={expected.Length} max |err| {worst:G3}, max err/tol {worstRatio:F3}");
    }
}
