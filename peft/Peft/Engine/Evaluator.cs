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

    /// <summary>
    /// Windows in batches of <paramref name="batch"/> sequences of <paramref name="seqLen"/> slots: ids and targets
    /// [batch·seqLen] (unused slots: id 0, target −1), the windows used, and the predicted tokens among them.
    /// </summary>
    public static IEnumerable<(int[] Ids, int[] Targets, int Windows, long Predicted)> Batches(IReadOnlyList<Window> windows, int batch, int seqLen)
    {
        for (int start = 0; start < windows.Count; start += batch)
        {
            int b = Math.Min(batch, windows.Count - start);
            var ids = new int[batch * seqLen];
            var targets = new int[batch * seqLen];
            Array.Fill(targets, -1);
            long predicted = 0;
            for (int i = 0; i < b; i++)
            {
                var w = windows[start + i];
                if (w.Inputs.Length > seqLen) throw new ArgumentException($"window of {w.Inputs.Length} tokens exceeds the {seqLen} slots of a sequence");
                w.Inputs.CopyTo(ids, i * seqLen);
                w.Targets.CopyTo(targets, i * seqLen);
                predicted += w.Targets.Count(t => t >= 0);
            }
            yield return (ids, targets, b, predicted);
        }
    }

    /// <summary>Token-weighted mean NLL over all windows, run in batches on the device.</summary>
    public static EvalResult Evaluate(LlamaRunner runner, IReadOnlyList<Window> windows, Action<int, int>? progress = null)
    {
        double total = 0;
        long count = 0;
        int T = runner.MaxSeq, done = 0;
        var losses = new float[runner.MaxBatch * T];
        foreach (var (ids, targets, b, predicted) in Batches(windows, runner.MaxBatch, T))
        {
            int rows = b * T;
            count += predicted;
            runner.Ids.RowsView(0, rows).Upload<int>(ids.AsSpan(0, rows));
            runner.Targets.RowsView(0, rows).Upload<int>(targets.AsSpan(0, rows));
            runner.Embed(rows);
            runner.Layers(b, T);
            runner.FinalNorm(rows);
            runner.TokenLosses(rows);
            runner.LossRows.RowsView(0, rows).Download<float>(losses.AsSpan(0, rows));
            for (int i = 0; i < rows; i++) total += losses[i];
            done += b;
            progress?.Invoke(done, windows.Count);
        }
        return new EvalResult(count == 0 ? double.NaN : total / count, count);
    }
}
