// Independent float64 reference forward pass of a Llama-family decoder (the oracle GPU kernels are compared with):
// embedding, RMSNorm, q/k/v (+bias), RoPE (interleaved or rotate-half, llama3/linear scaling), causal grouped-query
// attention with a stable softmax, o-proj, residual, SwiGLU MLP, final norm, classifier. Sequential with a KV cache.
// It mirrors the device's adapter hooks (IAdapterRuntime): before and after each base linear, after the attention and
// MLP blocks, the weight of each RMSNorm, a key/value prefix per layer (joined or gated softmax) and virtual input tokens.
namespace VkPeft.Peft.Models;

public sealed class ReferenceForward
{
    private readonly LlamaConfig _c;
    private readonly LlamaWeights _w;
    private readonly double[] _invFreq;  // [head_dim/2]

    public ReferenceForward(LlamaConfig config, LlamaWeights weights)
    {
        _c = config ?? throw new ArgumentNullException(nameof(config));
        _w = weights ?? throw new ArgumentNullException(nameof(weights));
        weights.Validate(config, "ReferenceForward");
        _invFreq = RopeInverseFrequencies(config, weights.RopeFreqFactors);
    }

    public LlamaConfig Config => _c;

    /// <summary>θ_i = base^(-2i/d) per rotated pair, with llama3/linear scaling or per-frequency divisors applied.</summary>
    public static double[] RopeInverseFrequencies(LlamaConfig c, float[]? freqFactors = null)
    {
        ArgumentNullException.ThrowIfNull(c);
        int half = c.HeadDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++)
        {
            double f = Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
            if (c.RopeScaling is { Type: "linear" } lin) f /= lin.Factor;
            else if (c.RopeScaling is { Type: "llama3" } s)
            {
                double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                double wavelen = 2 * Math.PI / f;
                if (wavelen > lowWavelen) f /= s.Factor;
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = (1 - smooth) * f / s.Factor + smooth * f;
                }
            }
            if (freqFactors is not null) f /= freqFactors[i];
            inv[i] = f;
        }
        return inv;
    }

    /// <summary>A decoding session: feeds tokens one at a time, keeping keys and values of earlier positions.</summary>
    public sealed class Session
    {
        private readonly ReferenceForward _m;
        private readonly List<double[]>[] _keys;    // [layer][pos] -> [kv_dim]
        private readonly List<double[]>[] _values;  // [layer][pos] -> [kv_dim]

        internal Session(ReferenceForward m)
        {
            _m = m;
            _keys = new List<double[]>[m._c.NLayers];
            _values = new List<double[]>[m._c.NLayers];
            for (int l = 0; l < m._c.NLayers; l++) { _keys[l] = []; _values[l] = []; }
            foreach (var row in m.VirtualTokens?.Invoke() ?? []) StepEmbedding(row);
        }

        /// <summary>Number of positions consumed so far.</summary>
        public int Position { get; private set; }

        /// <summary>Consumes <paramref name="token"/> at the next position and returns the logits [vocab] for the following token.</summary>
        public double[] Step(int token)
        {
            var c = _m._c;
            var w = _m._w;
            if (token < 0 || token >= c.VocabSize) throw new ArgumentOutOfRangeException(nameof(token), $"token {token} outside vocabulary of {c.VocabSize}");
            int dim = c.Dim;
            var x = new double[dim];  // the token's embedding row [dim]
            for (int i = 0; i < dim; i++) x[i] = w.TokenEmbedding[(long)token * dim + i];
            return StepEmbedding(x);
        }

        /// <summary>Consumes one embedding row [dim] (a token's, or a virtual token's) at the next position; returns the logits.</summary>
        public double[] StepEmbedding(double[] embedding)
        {
            var c = _m._c;
            var w = _m._w;
            int pos = Position;
            int dim = c.Dim, hd = c.HeadDim;
            if (embedding.Length != dim) throw new ArgumentException($"an embedding row has {dim} values, got {embedding.Length}", nameof(embedding));
            var x = (double[])embedding.Clone();  // residual stream [dim]

            for (int l = 0; l < c.NLayers; l++)
            {
                var lw = w.Layers[l];
                double[] h = _m.Norm(l, LlamaTensorKind.AttnNorm, x, lw.AttnNorm);
                double[] q = _m.Linear(l, LlamaTensorKind.Wq, h, lw.Wq, c.QDim, dim, lw.Bq);   // [n_heads*hd]
                double[] k = _m.Linear(l, LlamaTensorKind.Wk, h, lw.Wk, c.KvDim, dim, lw.Bk);  // [n_kv*hd]
                double[] v = _m.Linear(l, LlamaTensorKind.Wv, h, lw.Wv, c.KvDim, dim, lw.Bv);  // [n_kv*hd]
                // A joined (prefix-tuning) prefix sits in the KV cache before the sequence: its tokens rotate at positions P….
                int ropePos = pos + (_m.AttentionPrefix?.Invoke(l) is { Gate: null } joined ? joined.Keys.Length : 0);
                for (int head = 0; head < c.NHeads; head++) _m.Rope(q, head * hd, ropePos);
                for (int head = 0; head < c.NKvHeads; head++) _m.Rope(k, head * hd, ropePos);
                _keys[l].Add(k);
                _values[l].Add(v);

                var att = new double[c.QDim];
                int first = c.SlidingWindow is { } win ? Math.Max(0, pos - win + 1) : 0;
                double scale = 1.0 / Math.Sqrt(hd);
                var scores = new double[pos + 1];
                var prefix = _m.AttentionPrefix?.Invoke(l);
                int nPrefix = prefix?.Keys.Length ?? 0;
                var prefixScores = new double[nPrefix];
                for (int head = 0; head < c.NHeads; head++)
                {
                    int kvOff = head / c.GroupSize * hd;
                    int qOff = head * hd;
                    double max = double.NegativeInfinity;
                    // Prefix keys (no RoPE, never masked): in the sequence's softmax, or in their own one times the head's gate.
                    for (int p = 0; p < nPrefix; p++)
                    {
                        double sp = 0;
                        for (int i = 0; i < hd; i++) sp += q[qOff + i] * prefix!.Value.Keys[p][kvOff + i];
                        prefixScores[p] = sp * scale;
                    }
                    if (nPrefix > 0 && prefix!.Value.Gate is { } headGate)
                    {
                        double pmax = prefixScores.Max(), psum = 0;
                        for (int p = 0; p < nPrefix; p++) { prefixScores[p] = Math.Exp(prefixScores[p] - pmax); psum += prefixScores[p]; }
                        for (int p = 0; p < nPrefix; p++)
                            for (int i = 0; i < hd; i++) att[qOff + i] += headGate[head] * prefixScores[p] / psum * prefix.Value.Values[p][kvOff + i];
                        nPrefix = 0;   // handled: the sequence's softmax below is the plain one
                    }
                    for (int p = 0; p < nPrefix; p++) max = Math.Max(max, prefixScores[p]);
                    for (int t = first; t <= pos; t++)
                    {
                        double[] kt = _keys[l][t];
                        double s = 0;
                        for (int i = 0; i < hd; i++) s += q[qOff + i] * kt[kvOff + i];
                        scores[t] = s * scale;
                        if (scores[t] > max) max = scores[t];
                    }
                    double sum = 0;
                    for (int t = first; t <= pos; t++) { scores[t] = Math.Exp(scores[t] - max); sum += scores[t]; }
                    for (int p = 0; p < nPrefix; p++) { prefixScores[p] = Math.Exp(prefixScores[p] - max); sum += prefixScores[p]; }
                    for (int t = first; t <= pos; t++)
                    {
                        double p = scores[t] / sum;
                        double[] vt = _values[l][t];
                        for (int i = 0; i < hd; i++) att[qOff + i] += p * vt[kvOff + i];
                    }
                    for (int p = 0; p < nPrefix; p++)
                        for (int i = 0; i < hd; i++) att[qOff + i] += prefixScores[p] / sum * prefix!.Value.Values[p][kvOff + i];
                    nPrefix = prefix?.Keys.Length ?? 0;
                }
                double[] o = _m.Linear(l, LlamaTensorKind.Wo, att, lw.Wo, dim, c.QDim, lw.Bo);
                _m.AfterAttentionOutput?.Invoke(l, o);
                for (int i = 0; i < dim; i++) x[i] += o[i];

                h = _m.Norm(l, LlamaTensorKind.FfnNorm, x, lw.FfnNorm);
                double[] gate = _m.Linear(l, LlamaTensorKind.WGate, h, lw.WGate, c.HiddenDim, dim, lw.BGate);  // [hidden]
                double[] up = _m.Linear(l, LlamaTensorKind.WUp, h, lw.WUp, c.HiddenDim, dim, lw.BUp);        // [hidden]
                for (int i = 0; i < c.HiddenDim; i++) gate[i] = gate[i] / (1.0 + Math.Exp(-gate[i])) * up[i];
                double[] down = _m.Linear(l, LlamaTensorKind.WDown, gate, lw.WDown, dim, c.HiddenDim, lw.BDown);
                _m.AfterMlpOutput?.Invoke(l, h, down);
                for (int i = 0; i < dim; i++) x[i] += down[i];
            }

            double[] final = _m.Norm(-1, LlamaTensorKind.FinalNorm, x, w.FinalNorm);
            Position++;
            return MatVec(w.ClassifierOrEmbedding, final, c.VocabSize, dim, null);
        }
    }

    public Session NewSession() => new(this);

    /// <summary>Optional hook before each base linear: (layer, kind, input) → the input the base reads (input scaling).</summary>
    public Func<int, LlamaTensorKind, double[], double[]>? BeforeLinear { get; set; }

    /// <summary>
    /// Optional hook after each base linear: (layer, kind, input, output) — the after-transforms on output in place
    /// (add a branch, scale, renormalize); input is the linear's own input, before <see cref="BeforeLinear"/>.
    /// </summary>
    public Action<int, LlamaTensorKind, double[], double[]>? AfterLinear { get; set; }

    /// <summary>
    /// Optional RMSNorm weight: (layer, AttnNorm/FfnNorm, or −1 and FinalNorm) → the weight [dim] to apply instead of the
    /// base's, or null for the base's (norm tuning).
    /// </summary>
    public Func<int, LlamaTensorKind, double[]?>? NormWeight { get; set; }

    // y = x·rstd ⊙ gain, rstd = 1/sqrt(mean(x²) + eps); the gain is the tuned weight when the hook gives one.
    private double[] Norm(int layer, LlamaTensorKind kind, double[] x, float[] baseWeight)
    {
        double[]? tuned = NormWeight?.Invoke(layer, kind);
        double ss = 0;
        foreach (double xi in x) ss += xi * xi;
        double inv = 1.0 / Math.Sqrt(ss / x.Length + _c.RmsNormEps);
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = x[i] * inv * (tuned is null ? baseWeight[i] : tuned[i]);
        return y;
    }

    /// <summary>Optional hook on the attention block output before the residual add: (layer, z) transforms z in place.</summary>
    public Action<int, double[]>? AfterAttentionOutput { get; set; }

    /// <summary>Optional hook on the MLP output before the residual add: (layer, mlp input h, z) transforms z in place.</summary>
    public Action<int, double[], double[]>? AfterMlpOutput { get; set; }

    /// <summary>
    /// Optional key/value prefix per layer: keys and values [P][kv_dim] every query attends to (no RoPE, never masked)
    /// and, when not null, a gate [n_heads]: the prefix then has its own softmax and its output is scaled by the gate.
    /// Without a gate the prefix is part of the KV cache (prefix tuning): the sequence's tokens rotate at positions P….
    /// </summary>
    public Func<int, (double[][] Keys, double[][] Values, double[]? Gate)?>? AttentionPrefix { get; set; }

    /// <summary>Optional virtual tokens: embedding rows [P][dim] every session consumes (positions 0…P−1) before its first token.</summary>
    public Func<double[][]>? VirtualTokens { get; set; }

    private double[] Linear(int layer, LlamaTensorKind kind, double[] x, float[] w, int rows, int cols, float[]? bias)
    {
        var y = MatVec(w, BeforeLinear?.Invoke(layer, kind, x) ?? x, rows, cols, bias);
        AfterLinear?.Invoke(layer, kind, x, y);
        return y;
    }

    /// <summary>Logits [T][vocab]: row t predicts token t+1 from tokens[0..t].</summary>
    public double[][] Forward(ReadOnlySpan<int> tokens)
    {
        var s = NewSession();
        var logits = new double[tokens.Length][];
        for (int t = 0; t < tokens.Length; t++) logits[t] = s.Step(tokens[t]);
        return logits;
    }

    /// <summary>Mean negative log-likelihood of tokens[1..] given their prefixes.</summary>
    public double MeanNll(ReadOnlySpan<int> tokens)
    {
        if (tokens.Length < 2) throw new ArgumentException("need at least two tokens", nameof(tokens));
        double[][] logits = Forward(tokens[..^1]);
        double total = 0;
        for (int t = 0; t < logits.Length; t++) total -= LogSoftmaxAt(logits[t], tokens[t + 1]);
        return total / logits.Length;
    }

    /// <summary>Greedy (argmax) continuation: the prompt followed by up to <paramref name="maxNewTokens"/> tokens.</summary>
    public int[] GenerateGreedy(ReadOnlySpan<int> prompt, int maxNewTokens, int? stopToken = null)
    {
        if (prompt.Length == 0) throw new ArgumentException("prompt must hold at least one token (e.g. BOS)", nameof(prompt));
        var s = NewSession();
        var output = new List<int>(prompt.ToArray());
        double[] logits = [];
        foreach (int t in prompt) logits = s.Step(t);
        for (int n = 0; n < maxNewTokens && s.Position < _c.MaxSeqLen; n++)
        {
            int next = ArgMax(logits);
            if (stopToken == next) break;
            output.Add(next);
            if (n + 1 < maxNewTokens) logits = s.Step(next);
        }
        return output.ToArray();
    }

    public static int ArgMax(ReadOnlySpan<double> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    /// <summary>log softmax(logits)[index], computed stably.</summary>
    public static double LogSoftmaxAt(ReadOnlySpan<double> logits, int index)
    {
        double max = double.NegativeInfinity;
        foreach (double z in logits) if (z > max) max = z;
        double sum = 0;
        foreach (double z in logits) sum += Math.Exp(z - max);
        return logits[index] - max - Math.Log(sum);
    }

    private void Rope(double[] v, int off, int pos)
    {
        int half = _c.HeadDim / 2;
        for (int i = 0; i < half; i++)
        {
            double angle = pos * _invFreq[i];
            double cos = Math.Cos(angle), sin = Math.Sin(angle);
            (int a, int b) = _c.RopeLayout == RopeLayout.InterleavedPairs ? (off + 2 * i, off + 2 * i + 1) : (off + i, off + i + half);
            double x0 = v[a], x1 = v[b];
            v[a] = x0 * cos - x1 * sin;
            v[b] = x0 * sin + x1 * cos;
        }
    }

    // y[r] = Σ_c W[r, c]·x[c] (+ b[r]) for W [rows, cols] row-major.
    private static double[] MatVec(float[] w, double[] x, int rows, int cols, float[]? bias)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            long o = (long)r * cols;
            double s = 0;
            for (int c = 0; c < cols; c++) s += w[o + c] * x[c];
            y[r] = bias is null ? s : s + bias[r];
        }
        return y;
    }
}
