// stories260K end to end: llama2.c loader, tokenizer and float64 reference forward against reference.json.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using Xunit.Abstractions;

namespace VkPeft.Tests.Models;

public sealed class Llama2cGoldenTests(ITestOutputHelper output)
{
    [Fact]
    public void LoadsConfig()
    {
        var c = Stories260K.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.Equal(8, c.HeadDim);
        Assert.True(c.TiedClassifier);
        Assert.Null(Stories260K.Weights.Classifier);
        Assert.Equal(RopeLayout.InterleavedPairs, c.RopeLayout);
        Assert.Equal(0, Llama2cCheckpoint.DetectVersion(Stories260K.ModelPath));
    }

    [Fact]
    public void TokenizerMatchesReferenceIds()
    {
        var tok = Stories260K.Tokenizer();
        var r = Stories260K.Ref;
        Assert.Equal(r.TokenIds, tok.Encode(r.Text, bos: true));
        Assert.Equal(r.Text, tok.Decode(r.TokenIds));
        Assert.Equal(r.GreedyTokenIds[..5], tok.Encode(r.GreedyPrompt, bos: true));
    }

    [Fact]
    public void TokenizerByteFallbackRoundTrips()
    {
        var tok = Stories260K.Tokenizer();
        const string text = "Ünïcödé → 日本 ok";
        int[] ids = tok.Encode(text, bos: true, eos: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(2, ids[^1]);
        Assert.Contains(ids, id => id >= 3 && id < 259);
        Assert.Equal(text, tok.Decode(ids));
        Assert.Equal([1], tok.Encode("", bos: true));
    }

    [Fact]
    public void LogitsAndNllMatchReference()
    {
        var r = Stories260K.Ref;
        var fwd = new ReferenceForward(Stories260K.Config, Stories260K.Weights);
        double[][] logits = fwd.Forward(r.TokenIds);
        double maxErr = Stories260K.MaxAbsDiff(logits, r.Logits);
        double nll = fwd.MeanNll(r.TokenIds);
        output.WriteLine($"max |logit error| = {maxErr:E3}, NLL = {nll:R} (ref {r.MeanNllFp64:R}, diff {Math.Abs(nll - r.MeanNllFp64):E3})");
        Assert.True(maxErr < 1e-4, $"max logit error {maxErr}");
        Assert.True(Math.Abs(nll - r.MeanNllFp64) < 1e-5, $"NLL {nll} vs {r.MeanNllFp64}");
    }

    [Fact]
    public void GreedyContinuationMatchesReference()
    {
        var r = Stories260K.Ref;
        var tok = Stories260K.Tokenizer();
        var fwd = new ReferenceForward(Stories260K.Config, Stories260K.Weights);
        int[] prompt = tok.Encode(r.GreedyPrompt, bos: true);
        int[] ids = fwd.GenerateGreedy(prompt, 200);
        Assert.Equal(r.GreedyTokenIds, ids);
        Assert.Equal(r.GreedyText, tok.Decode(ids));
        var streamed = new System.Text.StringBuilder();
        for (int i = 1; i < ids.Length; i++) streamed.Append(tok.DecodeToken(ids[i - 1], ids[i]));
        Assert.Equal(r.GreedyText, streamed.ToString());
    }
}
