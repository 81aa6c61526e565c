// Access to the stories260K golden model (shared folder, cache or download) and its reference logits (Fixtures/stories260K_reference.json) for the model tests.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Models;

internal sealed record Reference(
    string Text,
    int[] TokenIds,
    double[][] Logits,
    double MeanNllFp64,
    string GreedyPrompt,
    int[] GreedyTokenIds,
    string GreedyText);

internal static class Stories260K
{
    public static string ModelPath => SharedData.Stories260K("stories260K.bin");
    public static string TokenizerPath => SharedData.Stories260K("tok512.bin");

    private static readonly Lazy<(LlamaConfig, LlamaWeights)> ModelLazy = new(() => Llama2cCheckpoint.Read(ModelPath));
    private static readonly Lazy<Reference> ReferenceLazy = new(LoadReference);

    public static LlamaConfig Config => ModelLazy.Value.Item1;
    public static LlamaWeights Weights => ModelLazy.Value.Item2;
    public static Reference Ref => ReferenceLazy.Value;

    public static ScoreMergeTokenizer Tokenizer() => Llama2cTokenizer.Load(TokenizerPath, Config.VocabSize);

    private static Reference LoadReference()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(SharedData.Fixture("stories260K_reference.json")));
        var r = doc.RootElement;
        int[] Ints(string name) => r.GetProperty(name).EnumerateArray().Select(e => e.GetInt32()).ToArray();
        return new Reference(
            r.GetProperty("text").GetString()!,
            Ints("token_ids"),
            r.GetProperty("logits").EnumerateArray().Select(row => row.EnumerateArray().Select(e => e.GetDouble()).ToArray()).ToArray(),
            r.GetProperty("mean_nll_fp64").GetDouble(),
            r.GetProperty("greedy_prompt").GetString()!,
            Ints("greedy_token_ids"),
            r.GetProperty("greedy_text").GetString()!);
    }

    /// <summary>Largest |a - b| over all positions and vocabulary entries.</summary>
    public static double MaxAbsDiff(double[][] a, double[][] b)
    {
        Assert.Equal(a.Length, b.Length);
        double max = 0;
        for (int t = 0; t < a.Length; t++)
        {
            Assert.Equal(a[t].Length, b[t].Length);
            for (int i = 0; i < a[t].Length; i++) max = Math.Max(max, Math.Abs(a[t][i] - b[t][i]));
        }
        return max;
    }
}
