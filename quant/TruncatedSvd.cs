// Rank-r truncated SVD of a dense float64 matrix by randomized subspace iteration (Halko, Martinsson & Tropp 2011,
// algorithm 4.4): a seeded Gaussian sketch, power iterations re-orthonormalized by modified Gram–Schmidt, then the
// exact SVD of the small projected matrix through the cyclic Jacobi eigen-decomposition of its Gram matrix. LoftQ's
// residual SVD uses it: cost O(rows·cols·(r + oversampling)) per power iteration instead of a full SVD's O(rows·cols²).
namespace VkPeft.Quant;

/// <summary>Rank-r truncated SVD of a dense row-major matrix by randomized subspace iteration (float64).</summary>
public static class TruncatedSvd
{
    /// <summary>
    /// The top <paramref name="rank"/> singular triplets of <paramref name="m"/> [rows, cols]: U [rows, rank] (row-major),
    /// singular values descending, Vᵀ [rank, cols]. A Gaussian sketch of rank + oversampling columns (seeded), refined
    /// by <paramref name="powerIterations"/> rounds of (M Mᵀ) with re-orthonormalization; the small projected matrix is
    /// decomposed exactly. With a spectral gap after the rank the result matches the exact SVD to rounding; without
    /// one (a noise-like residual) it is a close rank-r approximation, which is what LoftQ needs.
    /// </summary>
    public static (double[] U, double[] S, double[] Vt) Compute(double[] m, int rows, int cols, int rank, int seed, int powerIterations = 6)
    {
        int k = Math.Min(Math.Min(rows, cols), rank + Math.Max(8, rank));   // sketch width: rank plus oversampling
        var rng = new Random(seed);
        var omega = new double[(long)cols * k];
        for (long i = 0; i < omega.LongLength; i++) omega[i] = Gaussian(rng);
        var y = MulAB(m, omega, rows, cols, k);                // [rows, k]
        Orthonormalize(y, rows, k);
        for (int p = 0; p < powerIterations; p++)
        {
            var z = MulAtB(m, y, rows, cols, k);               // [cols, k] = Mᵀ Y
            Orthonormalize(z, cols, k);
            y = MulAB(m, z, rows, cols, k);                    // [rows, k] = M Z
            Orthonormalize(y, rows, k);
        }
        var small = MulAtB(y, m, rows, k, cols);               // [k, cols] = Yᵀ M  (Y is [rows, k])
        // Small SVD: eigen-decomposition of small·smallᵀ [k, k] by cyclic Jacobi.
        var gram = new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++)
            {
                double acc = 0;
                for (int c = 0; c < cols; c++) acc += small[(long)i * cols + c] * small[(long)j * cols + c];
                gram[i * k + j] = gram[j * k + i] = acc;
            }
        var (eig, vecs) = JacobiEigen(gram, k);
        var order = Enumerable.Range(0, k).OrderByDescending(i => eig[i]).ToArray();
        var u = new double[(long)rows * rank];
        var s = new double[rank];
        var vt = new double[(long)rank * cols];
        for (int r = 0; r < rank; r++)
        {
            int e = order[r];
            double sigma = Math.Sqrt(Math.Max(eig[e], 0));
            s[r] = sigma;
            for (int row = 0; row < rows; row++)
            {
                double acc = 0;
                for (int i = 0; i < k; i++) acc += y[(long)row * k + i] * vecs[i * k + e];
                u[(long)row * rank + r] = acc;
            }
            if (sigma == 0) continue;
            for (int c = 0; c < cols; c++)
            {
                double acc = 0;
                for (int i = 0; i < k; i++) acc += vecs[i * k + e] * small[(long)i * cols + c];
                vt[(long)r * cols + c] = acc / sigma;
            }
        }
        return (u, s, vt);
    }

    private static double Gaussian(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>[rows, k] = M [rows, cols] · X [cols, k]; rows in parallel, each summed in a fixed order (deterministic).</summary>
    private static double[] MulAB(double[] m, double[] x, int rows, int cols, int k)
    {
        var y = new double[(long)rows * k];
        Parallel.For(0, rows, r =>
        {
            long mr = (long)r * cols, yr = (long)r * k;
            for (int c = 0; c < cols; c++)
            {
                double v = m[mr + c];
                if (v == 0) continue;
                long xr = (long)c * k;
                for (int j = 0; j < k; j++) y[yr + j] += v * x[xr + j];
            }
        });
        return y;
    }

    /// <summary>
    /// [cols, k] = Mᵀ · Y for M [rows, cols], Y [rows, k]: blocks of 64 output rows in parallel, each streaming M's rows
    /// (contiguous reads) and summing every element in row order (deterministic).
    /// </summary>
    private static double[] MulAtB(double[] m, double[] y, int rows, int cols, int k)
    {
        const int block = 64;
        var z = new double[(long)cols * k];
        Parallel.For(0, (cols + block - 1) / block, bi =>
        {
            int c0 = bi * block, c1 = Math.Min(cols, c0 + block);
            for (int r = 0; r < rows; r++)
            {
                long mr = (long)r * cols, yr = (long)r * k;
                for (int c = c0; c < c1; c++)
                {
                    double v = m[mr + c];
                    if (v == 0) continue;
                    long zr = (long)c * k;
                    for (int j = 0; j < k; j++) z[zr + j] += v * y[yr + j];
                }
            }
        });
        return z;
    }

    /// <summary>Modified Gram–Schmidt (twice, for stability) on the k columns of a [rows, k] matrix; a dependent column becomes zero.</summary>
    private static void Orthonormalize(double[] a, int rows, int k)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < k; j++)
            {
                for (int i = 0; i < j; i++)
                {
                    double dot = 0;
                    for (int r = 0; r < rows; r++) dot += a[(long)r * k + i] * a[(long)r * k + j];
                    for (int r = 0; r < rows; r++) a[(long)r * k + j] -= dot * a[(long)r * k + i];
                }
                double norm = 0;
                for (int r = 0; r < rows; r++) norm += a[(long)r * k + j] * a[(long)r * k + j];
                norm = Math.Sqrt(norm);
                double scale = norm > 1e-300 ? 1 / norm : 0;
                for (int r = 0; r < rows; r++) a[(long)r * k + j] *= scale;
            }
    }

    /// <summary>Eigenvalues and eigenvectors (columns of a row-major [n, n]) of a symmetric matrix by cyclic Jacobi rotations.</summary>
    public static (double[] Values, double[] Vectors) JacobiEigen(double[] symmetric, int n)
    {
        var a = (double[])symmetric.Clone();
        var v = new double[n * n];
        for (int i = 0; i < n; i++) v[i * n + i] = 1;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0, diag = 0;
            for (int i = 0; i < n; i++)
            {
                diag += a[i * n + i] * a[i * n + i];
                for (int j = i + 1; j < n; j++) off += a[i * n + j] * a[i * n + j];
            }
            if (off <= 1e-30 * Math.Max(diag, 1e-300)) break;
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++)
                {
                    double apq = a[p * n + q];
                    if (apq == 0) continue;
                    double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                    double t = Math.Sign(theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    if (theta == 0) t = 1;
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int r = 0; r < n; r++)
                    {
                        double arp = a[r * n + p], arq = a[r * n + q];
                        a[r * n + p] = c * arp - s * arq;
                        a[r * n + q] = s * arp + c * arq;
                    }
                    for (int r = 0; r < n; r++)
                    {
                        double apr = a[p * n + r], aqr = a[q * n + r];
                        a[p * n + r] = c * apr - s * aqr;
                        a[q * n + r] = s * apr + c * aqr;
                    }
                    for (int r = 0; r < n; r++)
                    {
                        double vrp = v[r * n + p], vrq = v[r * n + q];
                        v[r * n + p] = c * vrp - s * vrq;
                        v[r * n + q] = s * vrp + c * vrq;
                    }
                }
        }
        var values = new double[n];
        for (int i = 0; i < n; i++) values[i] = a[i * n + i];
        return (values, v);
    }
}
