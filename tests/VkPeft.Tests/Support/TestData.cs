// Seeded random data and tolerance assertions shared by the tests.
namespace VkPeft.Tests.Support;

public static class TestData
{
    public static float[] Uniform(int n, int seed, float lo = -1, float hi = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)rng.NextDouble();
        return x;
    }

    public static float[] Normal(int n, int seed, float std = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            x[i] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return x;
    }

    /// <summary>
    /// The float comparison of the tests: |actual − expected| ≤ abs + rel·|expected| elementwise (NaN never passes);
    /// a failure names <paramref name="what"/>, the first element out of tolerance, both values and the tolerance.
    /// </summary>
    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double abs, double rel, string what)
    {
        if (expected.Length != actual.Length)
            Assert.Fail($"{what}: {actual.Length} elements, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            double tol = abs + rel * Math.Abs(expected[i]);
            if (double.IsNaN(actual[i]) || err > tol)
                Assert.Fail($"{what}: element {i} is {actual[i]}, expected {expected[i]} (|err| {err:G3} > tol {tol:G3})");
        }
    }

    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double abs, double rel, string what)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        Close(e, actual, abs, rel, what);
    }
}
