// Mean negative log-likelihood and perplexity of documents on the device: each document is BOS + its tokens, every
// token after BOS is predicted, long documents are cut into windows of seq-len predicted tokens; token-weighted mean.
namespace VkPeft.Peft.Engine;

public sealed record EvalResult(double MeanNll, long Tokens)
{
    public double Perplexity => Math.Exp(MeanNll);
}

public static class Evaluator
{
    /// <summary>A window: input ids and the target of each position (-1 where nothing is predicted).</summary>
    public sealed record Window(int[] Inputs, int[] Targets);

    /// <summary>Cuts each tokenized document (BOS included) into windows of at most <paramref name="seqLen"/> predictions.</summary>
    public static List<Window> Windows(IEnumerable<int[]> documents, int seqLen)
    {
        var list = new List<Window>();
        foreach (var doc in documents)
        {
            for (int s = 0; s + 1 < doc.Length; s += seqLen)
            {
                int n = Math.Min(seqLen, doc.Length - 1 - s);
                list.Add(new Window(doc.AsSpan(s, n).ToArray(), doc.AsSpan(s + 1, n).ToArray()));
            }
        }
        return list;
    }

    /// <summary>Token-weighted mean NLL over all windows, run in batches on the device.</summary>
    public static EvalResult Evaluate(LlamaRunner runner, IReadOnlyList<Window> windows, Action<int, int>? progress = null)
    {
        double total = 0;
        long count = 0;
        int T = runner.MaxSeq, B = runner.MaxBatch;
        var losses = new float[B * T];
        for (int start = 0; start < windows.Count; start += B)
        {
            int b = Math.Min(B, windows.Count - start);
            var ids = new int[b * T];
            var targets = new int[b * T];
            Array.Fill(targets, -1);
            for (int i = 0; i < b; i++)
            {
                var w = windows[start + i];
                if (w.Inputs.Length > T) throw new ArgumentException($"window of {w.Inputs.Length} tokens exceeds the runner's {T}");
                w.Inputs.CopyTo(ids, i * T);
                w.Targets.CopyTo(targets, i * T);
                count += w.Targets.Count(t => t >= 0);
            }
            int rows = b * T;
            runner.Ids.RowsView(0, rows).Upload<int>(ids);
            runner.Targets.RowsView(0, rows).Upload<int>(targets);
            runner.Embed(rows);
            runner.Layers(b, T);
            runner.FinalNorm(rows);
            runner.TokenLosses(rows);
            runner.LossRows.RowsView(0, rows).Download<float>(losses.AsSpan(0, rows));
            for (int i = 0; i < rows; i++) total += losses[i];
            progress?.Invoke(Math.Min(start + b, windows.Count), windows.Count);
        }
        return new EvalResult(count == 0 ? double.NaN : total / count, count);
    }
}
