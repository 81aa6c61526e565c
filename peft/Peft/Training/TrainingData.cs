// Turns data files into training windows: documents tokenized (BOS per document, EOS after instruction responses),
// shuffled by the seed, split into train and held-out sets, and packed into fixed windows of seq-len predictions.
using VkPeft.Peft.Data;
using VkPeft.Peft.Tokenizers;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>A packed window: seq-len inputs and their targets (−1 where the next token is not predicted).</summary>
public sealed record TrainWindow(int[] Inputs, int[] Targets);

public sealed class TrainingData
{
    private TrainingData(List<TrainWindow> train, List<TrainWindow> eval, int trainDocs, int evalDocs)
    {
        Train = train; Eval = eval; TrainDocuments = trainDocs; EvalDocuments = evalDocs;
    }

    public List<TrainWindow> Train { get; }
    public List<TrainWindow> Eval { get; }
    public int TrainDocuments { get; }
    public int EvalDocuments { get; }
    public long TrainTokens => Train.Sum(w => (long)w.Targets.Count(t => t >= 0));

    /// <summary>Training data from windows already built (benchmarks and tests on random-weight models).</summary>
    public static TrainingData FromWindows(List<TrainWindow> train, List<TrainWindow> eval) => new(train, eval, train.Count, eval.Count);

    public static TrainingData Load(ITextTokenizer tok, string data, string? evalData, double evalFraction, int seqLen, int seed)
    {
        var docs = TextDataset.Read(data).Select(r => TextDataset.Tokenize(tok, r)).Where(d => d.Tokens.Length > 1).ToList();
        if (docs.Count == 0) throw new FormatException($"{data}: no document has a token to predict");
        Shuffle(docs, new Random(seed));
        List<TokenizedDocument> evalDocs;
        if (evalData != null)
            evalDocs = TextDataset.Read(evalData).Select(r => TextDataset.Tokenize(tok, r)).Where(d => d.Tokens.Length > 1).ToList();
        else
        {
            int n = (int)Math.Floor(docs.Count * evalFraction);
            evalDocs = docs.GetRange(docs.Count - n, n);
            docs.RemoveRange(docs.Count - n, n);
            if (docs.Count == 0) throw new SettingException($"{data}: {TrainSettings.EvalFraction} {evalFraction} leaves no training document");
        }
        return new TrainingData(Pack(docs, seqLen), EvalWindows(evalDocs, seqLen), docs.Count, evalDocs.Count);
    }

    /// <summary>Concatenates documents and cuts the stream into windows of <paramref name="seqLen"/> inputs.</summary>
    public static List<TrainWindow> Pack(IReadOnlyList<TokenizedDocument> docs, int seqLen)
    {
        var tokens = new List<int>();
        var predict = new List<bool>();
        foreach (var d in docs)
        {
            tokens.AddRange(d.Tokens);
            predict.AddRange(d.Predict);
        }
        var windows = new List<TrainWindow>();
        for (int s = 0; s + 1 < tokens.Count; s += seqLen)
        {
            int n = Math.Min(seqLen, tokens.Count - 1 - s);
            var inputs = new int[seqLen];
            var targets = new int[seqLen];
            Array.Fill(targets, -1);
            for (int i = 0; i < n; i++)
            {
                inputs[i] = tokens[s + i];
                targets[i] = predict[s + i + 1] ? tokens[s + i + 1] : -1;
            }
            if (targets.Any(t => t >= 0)) windows.Add(new TrainWindow(inputs, targets));
        }
        return windows;
    }

    /// <summary>Held-out windows: each document separately (no packing across documents), long ones cut.</summary>
    public static List<TrainWindow> EvalWindows(IReadOnlyList<TokenizedDocument> docs, int seqLen) =>
        docs.SelectMany(d => Pack([d], seqLen)).ToList();

    public static void Shuffle<T>(IList<T> list, Random rng)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }

    /// <summary>The windows of micro-batch <paramref name="index"/> (global count): epochs reshuffled by seed and epoch.</summary>
    public TrainWindow[] MicroBatch(long index, int batch, int seed)
    {
        var result = new TrainWindow[batch];
        for (int b = 0; b < batch; b++)
        {
            long k = index * batch + b;
            long epoch = k / Train.Count;
            int pos = (int)(k % Train.Count);
            result[b] = Train[Order(epoch, seed)[pos]];
        }
        return result;
    }

    private readonly Dictionary<long, int[]> _orders = [];

    private int[] Order(long epoch, int seed)
    {
        if (_orders.TryGetValue(epoch, out var o)) return o;
        o = Enumerable.Range(0, Train.Count).ToArray();
        Shuffle(o, new Random(unchecked(seed * 1000003 + (int)epoch * 7919 + 0x5eed)));
        if (_orders.Count > 4) _orders.Clear();
        _orders[epoch] = o;
        return o;
    }
}
