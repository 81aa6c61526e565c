// stories260K re-exported by independent test writers (HF safetensors F32/F16/BF16, sharded, GGUF F32/Q8_0)
// and loaded back through the library gives the llama2.c logits.
using System.Text;
using VkPeft.Peft.Formats;
using VkPeft.Quant;
using VkPeft.Peft.Models;
using Xunit.Abstractions;

namespace VkPeft.Tests.Models;

public sealed class FormatRoundTripTests(ITestOutputHelper output)
{
    private static readonly Lazy<double[][]> BaseLogits = new(() =>
        new ReferenceForward(Stories260K.Config, Stories260K.Weights).Forward(Stories260K.Ref.TokenIds));

    private double CompareLogits(LoadedModel m, string label)
    {
        double[][] logits = new ReferenceForward(m.Config, m.Weights).Forward(Stories260K.Ref.TokenIds);
        double err = Stories260K.MaxAbsDiff(logits, BaseLogits.Value);
        output.WriteLine($"{label}: max |logit - llama2.c logit| = {err:E3}");
        return err;
    }

    [Theory]
    [InlineData("F32", 1e-5)]
    [InlineData("F16", 5e-2)]
    [InlineData("BF16", 3e-1)]
    public void HfSafetensorsGivesSameLogits(string dtype, double tolerance)
    {
        using var dir = new TempDir();
        TestWriters.WriteHfFolder(dir.Path, Stories260K.Config, Stories260K.Weights, dtype);
        var m = ModelLoader.Load(dir.Path);
        Assert.Equal(ModelSourceFormat.HuggingFace, m.Source.Format);
        Assert.Equal(RopeLayout.RotateHalf, m.Config.RopeLayout);
        Assert.True(m.Config.TiedClassifier);
        Assert.Equal((4, 8), (m.Config.NKvHeads, m.Config.HeadDim));
        Assert.Null(m.Tokenizer);
        Assert.True(CompareLogits(m, "HF " + dtype) < tolerance);
    }

    [Fact]
    public void ShardedSafetensorsAndLibraryWriterRoundTrip()
    {
        using var dir = new TempDir();
        var c = Stories260K.Config;
        var tensors = TestWriters.HfTensors(c, Stories260K.Weights);
        File.WriteAllText(dir.File("config.json"), TestWriters.HfConfigJson(c));
        // Two shards written by the library writer, plus the index.
        var map = new StringBuilder("{\"metadata\":{\"total_size\":0},\"weight_map\":{");
        for (int s = 0; s < 2; s++)
        {
            string shard = $"model-0000{s + 1}-of-00002.safetensors";
            var part = tensors.Where((_, i) => i % 2 == s).ToList();
            SafeTensorsWriter.Write(dir.File(shard), part.Select(t => SafeTensorsWriter.FromFloat32(t.Name, t.Shape, t.Data)));
            foreach (var t in part) map.Append($"\"{t.Name}\":\"{shard}\",");
        }
        map.Length--;
        map.Append("}}");
        File.WriteAllText(dir.File(HfCheckpoint.IndexFile), map.ToString());

        string header = SafeTensorsWriter.ReadHeaderText(dir.File("model-00001-of-00002.safetensors"));
        Assert.Equal(0, (header.Length + 8) % 8);
        Assert.StartsWith("{\"__metadata__\":{\"format\":\"pt\"}", header);
        using (var f = SafeTensorsFile.Open(dir.File("model-00001-of-00002.safetensors")))
            Assert.Equal("pt", f.Metadata["format"]);

        var m = ModelLoader.Load(dir.File("config.json"));
        Assert.True(CompareLogits(m, "HF sharded") < 1e-5);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp-*"));
    }

    private static List<(string, float)> Vocab()
    {
        var tok = Stories260K.Tokenizer();
        return Enumerable.Range(0, tok.VocabSize).Select(i => (Encoding.UTF8.GetString(tok.PieceBytes(i)), tok.Score(i))).ToList();
    }

    [Fact]
    public void GgufGivesSameLogitsAndTokenizer()
    {
        using var dir = new TempDir();
        string path = dir.File("stories260K.gguf");
        TestWriters.StoriesGguf(Stories260K.Config, Stories260K.Weights, Vocab()).Write(path);
        var m = ModelLoader.Load(path);
        Assert.Equal(ModelSourceFormat.Gguf, m.Source.Format);
        Assert.Equal(RopeLayout.InterleavedPairs, m.Config.RopeLayout);
        Assert.True(m.Config.TiedClassifier);
        Assert.True(CompareLogits(m, "GGUF F32") < 1e-5);

        Assert.NotNull(m.Tokenizer);
        var r = Stories260K.Ref;
        Assert.Equal(r.TokenIds, m.Tokenizer!.Encode(r.Text));
        Assert.Equal(r.Text, m.Tokenizer.Decode(r.TokenIds));

        var f = GgufFile.Open(path);
        Assert.Equal(3u, f.Version);
        Assert.Equal("stories260K", f.GetString("general.name"));
        Assert.Equal(new ulong[] { 64, 512 }, f.Tensor("token_embd.weight").Ne);
    }

    [Fact]
    public void GgufQ8_0DecodesCloseToFloat()
    {
        using var dir = new TempDir();
        string path = dir.File("q8.gguf");
        TestWriters.StoriesGguf(Stories260K.Config, Stories260K.Weights, Vocab(), q8: true).Write(path);
        var f = GgufFile.Open(path);
        Assert.Equal(GgmlType.Q8_0, f.Tensor("blk.0.attn_q.weight").Type);
        var (config, weights) = GgufLlama.Load(f);
        double err = CompareLogits(new LoadedModel(config, weights, null, new ModelSourceInfo(ModelSourceFormat.Gguf, path, null, null)), "GGUF Q8_0");
        Assert.True(err < 0.2, $"Q8_0 logits off by {err}");
        float[] q = weights.Layers[0].Wq, q0 = Stories260K.Weights.Layers[0].Wq;
        for (int i = 0; i < q.Length; i++) Assert.True(Math.Abs(q[i] - q0[i]) < 0.01, $"element {i}");
    }

    [Fact]
    public void Llama2cV0WriterRoundTrips()
    {
        using var dir = new TempDir();
        string path = dir.File("copy.bin");
        Llama2cCheckpoint.WriteV0(path, Stories260K.Config, Stories260K.Weights);
        Assert.Equal(new FileInfo(Stories260K.ModelPath).Length, new FileInfo(path).Length);
        File.Copy(Stories260K.TokenizerPath, dir.File("tok512.bin"));
        var m = ModelLoader.Load(path);
        Assert.Equal(ModelSourceFormat.Llama2cV0, m.Source.Format);
        Assert.NotNull(m.Tokenizer);
        Assert.Equal(0.0, CompareLogits(m, "llama2.c v0 rewrite"));
    }

    [Fact]
    public void Llama2cV1Reads()
    {
        using var dir = new TempDir();
        var c = Stories260K.Config;
        var w = Stories260K.Weights;
        string path = dir.File("v1.bin");
        using (var bw = new BinaryWriter(File.Create(path)))
        {
            bw.Write(0x616b3432u);
            bw.Write(1);
            foreach (int v in new[] { c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKvHeads, c.VocabSize, c.MaxSeqLen }) bw.Write(v);
            bw.Write((byte)1);
            while (bw.BaseStream.Position < 256) bw.Write((byte)0);
            void F(float[] a) { foreach (float x in a) bw.Write(x); }
            foreach (var L in w.Layers) F(L.AttnNorm);
            foreach (var L in w.Layers) F(L.FfnNorm);
            F(w.FinalNorm);
            F(w.TokenEmbedding);
            foreach (var L in w.Layers) F(L.Wq);
            foreach (var L in w.Layers) F(L.Wk);
            foreach (var L in w.Layers) F(L.Wv);
            foreach (var L in w.Layers) F(L.Wo);
            foreach (var L in w.Layers) F(L.WGate);
            foreach (var L in w.Layers) F(L.WDown);
            foreach (var L in w.Layers) F(L.WUp);
        }
        var m = ModelLoader.Load(path);
        Assert.Equal(ModelSourceFormat.Llama2cV1, m.Source.Format);
        Assert.Null(m.Tokenizer);
        Assert.NotNull(m.Source.TokenizerNote);
        Assert.Equal(0.0, CompareLogits(m, "llama2.c v1"));
    }
}
