// Float64 reference of the gathered LoRA kernels (lora_gathered.comp): the LoRA branch of a batch whose rows each use
// their own adapter from pools padded to one rank, and rows without an adapter left as they are.
namespace VkPeft.Runtime.Reference;

public static class GatheredLoraReference
{
    /// <summary>
    /// y[m,:] + scale[m]·B[a_m]·(A[a_m]·x[m,:]) for rows with a_m ≥ 0, y[m,:] for rows with a_m &lt; 0. x [M,K],
    /// aPool [S,R,K], bPool [S,N,R], scale [M] (per row), rowAdapter [M], y [M,N] (returned as a new array).
    /// </summary>
    public static double[] Apply(double[] x, double[] aPool, double[] bPool, double[] scale, int[] rowAdapter, double[] y, int k, int n, int rank)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(aPool);
        ArgumentNullException.ThrowIfNull(bPool);
        ArgumentNullException.ThrowIfNull(scale);
        ArgumentNullException.ThrowIfNull(rowAdapter);
        ArgumentNullException.ThrowIfNull(y);
        var result = (double[])y.Clone();
        var t = new double[rank];
        for (int m = 0; m < rowAdapter.Length; m++)
        {
            int a = rowAdapter[m];
            if (a < 0) continue;
            for (int r = 0; r < rank; r++)
            {
                double s = 0;
                for (int i = 0; i < k; i++) s += aPool[((long)a * rank + r) * k + i] * x[(long)m * k + i];
                t[r] = s;
            }
            for (int o = 0; o < n; o++)
            {
                double s = 0;
                for (int r = 0; r < rank; r++) s += bPool[((long)a * n + o) * rank + r] * t[r];
                result[(long)m * n + o] += scale[m] * s;
            }
        }
        return result;
    }
}
