// Text generation on the device: prefill the prompt into the KV cache, then one token per step, greedy at
// temperature 0 or sampled with temperature and nucleus (top-p) filtering from a seeded generator.
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public sealed record SamplingOptions(float Temperature = 0f, float TopP = 1f, int Seed = 42)
{
    public void Validate()
    {
        if (!float.IsFinite(Temperature) || Temperature < 0) throw new SettingException($"{EngineSettings.Temperature} must be ≥ 0, got {Temperature}");
        if (!float.IsFinite(TopP) || TopP <= 0 || TopP > 1) throw new SettingException($"{EngineSettings.TopP} must be in (0, 1], got {TopP}");
    }
}

public sealed class Generator
{
    private readonly LlamaRunner _runner;

    public Generator(LlamaRunner runner) { _runner = runner; }

    /// <summary>
    /// Generates up to <paramref name="maxNewTokens"/> tokens after <paramref name="prompt"/>, calling
    /// <paramref name="onToken"/> for each as it comes; stops at <paramref name="stopToken"/> or one of
    /// <paramref name="moreStopTokens"/> (not emitted).
    /// Returns prompt + generated ids. Prefill and each step are one submission each.
    /// </summary>
    public int[] Generate(IReadOnlyList<int> prompt, int maxNewTokens, SamplingOptions sampling, int? stopToken = null, Action<int>? onToken = null,
        IReadOnlyCollection<int>? moreStopTokens = null)
    {
        sampling.Validate();
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens");
        int limit = Math.Min(_runner.MaxSeq, prompt.Count + maxNewTokens);
        if (prompt.Count > _runner.MaxSeq) throw new ArgumentException($"the prompt has {prompt.Count} tokens; the context holds {_runner.MaxSeq}");
        var rng = new Random(sampling.Seed);
        var tokens = new List<int>(prompt);
        var vocab = _runner.Model.Config.VocabSize;
        var logits = new float[vocab];
        int pos = 0;
        int[] feed = [.. prompt];
        while (tokens.Count < limit || pos < tokens.Count)
        {
            _runner.Ids.RowsView(0, feed.Length).Upload<int>(feed);
            _runner.Embed(feed.Length);
            _runner.Layers(1, feed.Length, pos);
            int last = feed.Length - 1;
            _runner.FinalNorm(feed.Length);
            _runner.LogitsOf(last, 1).Download<float>(logits);
            pos += feed.Length;
            if (tokens.Count >= limit) break;
            int next = Sample(logits, sampling, rng);
            if ((stopToken.HasValue && next == stopToken.Value) || (moreStopTokens?.Contains(next) ?? false)) break;
            tokens.Add(next);
            onToken?.Invoke(next);
            if (tokens.Count >= limit) break;
            feed = [next];
        }
        return tokens.ToArray();
    }

    /// <summary>argmax at temperature 0; else softmax(logits/T) restricted to the smallest top-p set, sampled.</summary>
    public static int Sample(float[] logits, SamplingOptions s, Random rng)
    {
        if (s.Temperature == 0)
        {
            int best = 0;
            for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
            return best;
        }
        double max = logits.Max();
        var p = new double[logits.Length];
        double sum = 0;
        for (int i = 0; i < p.Length; i++) { p[i] = Math.Exp((logits[i] - max) / s.Temperature); sum += p[i]; }
        var order = Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).ToArray();
        double cum = 0, keep = 0;
        int n = 0;
        foreach (var i in order)
        {
            cum += p[i] / sum;
            keep += p[i];
            n++;
            if (cum >= s.TopP) break;
        }
        double r = rng.NextDouble() * keep;
        for (int j = 0; j < n; j++)
        {
            r -= p[order[j]];
            if (r <= 0) return order[j];
        }
        return order[n - 1];
    }
}
