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
/// The cooperative-matrix flash kernels (<c>coopMatrix</c>) add what their fp16 operands cost (include/
/// attention_flash_coop.glsl): hi/lo pairs carry a value to 2⁻²⁰ relative (conversions may truncate) and each score
/// sums three such products, so ε_s grows by 3·2⁻²⁰·A, plus hd·2⁻²³·scale·max|q|·max|k| for lo parts flushed to fp16
/// subnormals; the single fp16 operand of P·V, dS·K, Pᵀ·dO and dSᵀ·Q (P or dS, rounded once: at most 2⁻¹⁰ relative)
/// and the split dP make F grow by 2·2⁻¹⁰ + 2⁻¹⁸; entries flushed to subnormals err by at most 2⁻²⁴ of their block's
/// largest, which adds n·2⁻²² of the tensor's largest term sum. Scores held in fp16 (spacing 0.5 at 1e3), a softmax
/// without its running maximum, or tiny dO left unscaled in fp16 exceed these bounds by orders of magnitude.
/// </summary>
public sealed record AttentionTolerances(double[] O, double[] Lse, double[] Delta, double[] Dq, double[] Dk, double[] Dv)
{
    private const double U = 1.0 / (1 << 24);

    public static AttentionTolerances For(AttentionShape s, double[] q, double[] k, double[] v, double[] dO, bool coopMatrix = false)
    {
        var (o, lse) = AttentionReference.Forward(q, k, v, s);
        int hd = s.HeadDim, T = s.SeqLen, S = s.StartPos + s.SeqLen;
        double a = 0;
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.NHeads; h++)
                for (int i = 0; i < T; i++)
                    for (int j = 0; j <= s.StartPos + i; j++)
                        a = Math.Max(a, s.Scale * AbsDot(q, Qb(s, b, h, i), k, Kb(s, b, h, j), hd));
        double es = Gamma(hd) * a, operand = 0;
        if (coopMatrix)
        {
            es += 3 * Math.Pow(2, -20) * a + hd * Math.Pow(2, -23) * s.Scale * MaxAbs(q) * MaxAbs(k);
            operand = 2 * Math.Pow(2, -10) + Math.Pow(2, -18);
        }
        double Factor(int n) => 4 * ((hd + n + 3) * U + 2 * es + (4 * a + Math.Log(S + 1)) * U) + operand;
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
        if (coopMatrix)
            foreach (var (t, n) in new[] { (to, S), (tq, S), (tk, s.Group * T), (tv, s.Group * T) })
            {
                double flush = n * Math.Pow(2, -22) * MaxAbs(t) / (n == S ? fq : fk);   // the largest term sum
                for (int i = 0; i < t.Length; i++) t[i] += flush;
            }
        foreach (var t in new[] { to, tq, tk, tv })
            for (int i = 0; i < t.Length; i++) t[i] += 1e-30;
        return new AttentionTolerances(to, tl, td, tq, tk, tv);
    }

    private static double MaxAbs(double[] x) => x.Length == 0 ? 0 : x.Max(Math.Abs);

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
