// Per-element fp32 error bounds for the attention kernels, from a first-order forward error analysis evaluated on the
// actual inputs (like the γ_K·Σ|a||b| bound of the matmul tests): the GPU-vs-CPU tests and `bench gpu-report` use them.
namespace VkPeft.Runtime.Reference;

/// <summary>
/// With u = 2⁻²⁴ and A = max over (query, key) of scale·Σ_d|q_d||k_d|: a score errs by ε_s ≤ γ_hd·A; a probability
/// p = exp(s − lse) by a relative 2ε_s + (3+2|s − lse|)·u (Vulkan's exp precision, |s − lse| ≤ 2A + log n) plus the
/// rounding of the softmax sum; a sum of N terms by γ_N relative to the sum of their magnitudes. Each output's bound is
/// F·(Σ of the magnitudes of its terms), F = 4·((hd + N + 3)·u + 2ε_s + (4A + log n)·u), where for dq and dk the term
/// magnitude uses Σ|dO||v| + Σ|dO||o| + |dP − D| (the dot products dP and D can cancel). The factor 4 covers the second
/// place the same errors enter (l in o = Σpv/l, the delta pre-pass). A wrong index or a missed key changes an output by
/// a whole term, orders of magnitude above these bounds.
/// </summary>
public sealed record AttentionTolerances(double[] O, double[] Lse, double[] Delta, double[] Dq, double[] Dk, double[] Dv)
{
    private const double U = 1.0 / (1 << 24);

    public static AttentionTolerances For(AttentionShape s, double[] q, double[] k, double[] v, double[] dO)
    {
        var (o, lse) = AttentionReference.Forward(q, k, v, s);
        int hd = s.HeadDim, T = s.SeqLen, S = s.StartPos + s.SeqLen;
        double a = 0;
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < T; i++)
                    for (int j = 0; j <= s.StartPos + i; j++)
                        a = Math.Max(a, s.Scale * AbsDot(q, Qb(s, b, h, i), k, Kb(s, b, h, j), hd));
        double Factor(int n) => 4 * ((hd + n + 3) * U + 2 * Gamma(hd) * a + (4 * a + Math.Log(S + 1)) * U);
        double fq = Factor(S), fk = Factor(s.Group * T);

        var to = new double[s.QCount];
        var tl = new double[s.LseCount];
        var td = new double[s.LseCount];
        var tq = new double[s.QCount];
        var tk = new double[s.KCount];
        var tv = new double[s.KCount];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < T; i++)
                {
                    int qb = Qb(s, b, h, i), li = (b * s.NHeads + h) * T + i;
                    double dAbs = AbsDot(dO, qb, o, qb, hd), dsum = 0;
                    for (int d = 0; d < hd; d++) dsum += dO[qb + d] * o[qb + d];
                    td[li] = Factor(hd) * dAbs + 1e-30;
                    tl[li] = fq + Math.Pow(2, -21) + 4 * U * Math.Abs(lse[li]);
                    for (int j = 0; j <= s.StartPos + i; j++)
                    {
                        int kb = Kb(s, b, h, j);
                        double sc = 0, dp = 0;
                        for (int d = 0; d < hd; d++) { sc += q[qb + d] * k[kb + d]; dp += dO[qb + d] * v[kb + d]; }
                        double p = Math.Exp(sc * s.Scale - lse[li]);
                        double g = p * s.Scale * (AbsDot(dO, qb, v, kb, hd) + dAbs + Math.Abs(dp - dsum));
                        for (int d = 0; d < hd; d++)
                        {
                            to[qb + d] += fq * p * Math.Abs(v[kb + d]);
                            tq[qb + d] += fq * g * Math.Abs(k[kb + d]);
                            tk[kb + d] += fk * g * Math.Abs(q[qb + d]);
                            tv[kb + d] += fk * p * Math.Abs(dO[qb + d]);
                        }
                    }
                }
        foreach (var t in new[] { to, tq, tk, tv })
            for (int i = 0; i < t.Length; i++) t[i] += 1e-30;
        return new AttentionTolerances(to, tl, td, tq, tk, tv);
    }

    private static double Gamma(int n) => n * U / (1 - n * U);
    private static int Qb(AttentionShape s, int b, int h, int i) => (b * s.SeqLen + i) * s.Ldq + h * s.HeadDim;
    private static int Kb(AttentionShape s, int b, int h, int j) => (b * s.KvStride + j) * s.Ldk + h / s.Group * s.HeadDim;

    private static double AbsDot(double[] x, int xb, double[] y, int yb, int n)
    {
        double r = 0;
        for (int d = 0; d < n; d++) r += Math.Abs(x[xb + d] * y[yb + d]);
        return r;
    }
}
