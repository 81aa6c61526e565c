// Built-in Llama-family shapes (stories260K … Llama-2-13B) for planning and benchmarks, and a cheap seeded generator of
// random weights for them that can build a slice: the first n layers, optionally with a reduced vocabulary.
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

public static class ModelCatalog
{
    private static LlamaConfig Llama(int dim, int hidden, int layers, int heads, int kv, int vocab, int ctx, bool tied = false,
        double theta = 10000, RopeScaling? scaling = null, int? window = null, string arch = "llama") => new()
        {
            Architecture = arch, Dim = dim, HiddenDim = hidden, NLayers = layers, NHeads = heads, NKvHeads = kv, HeadDim = dim / heads,
            VocabSize = vocab, MaxSeqLen = ctx, RmsNormEps = 1e-5, RopeTheta = theta, RopeScaling = scaling, SlidingWindow = window,
            RopeLayout = RopeLayout.RotateHalf, TiedClassifier = tied, BosId = 1, EosId = 2,
        };

    /// <summary>Name → configuration (shapes as published; weights are never part of the catalog).</summary>
    public static readonly IReadOnlyDictionary<string, LlamaConfig> Configs = new Dictionary<string, LlamaConfig>(StringComparer.OrdinalIgnoreCase)
    {
        ["stories260K"] = Llama(64, 172, 5, 8, 4, 512, 512, tied: true) with { RopeLayout = RopeLayout.InterleavedPairs },
        ["tinyllama-1.1b"] = Llama(2048, 5632, 22, 32, 4, 32000, 2048),
        ["llama-3.2-1b"] = Llama(2048, 8192, 16, 32, 8, 128256, 131072, tied: true, theta: 500000, scaling: new RopeScaling("llama3", 32, 1, 4, 8192)),
        ["llama-3.2-3b"] = Llama(3072, 8192, 28, 24, 8, 128256, 131072, tied: true, theta: 500000, scaling: new RopeScaling("llama3", 32, 1, 4, 8192)),
        ["llama-2-7b"] = Llama(4096, 11008, 32, 32, 32, 32000, 4096),
        ["llama-3.1-8b"] = Llama(4096, 14336, 32, 32, 8, 128256, 131072, theta: 500000, scaling: new RopeScaling("llama3", 8, 1, 4, 8192)),
        ["mistral-7b"] = Llama(4096, 14336, 32, 32, 8, 32000, 32768, window: 4096, arch: "mistral"),
        ["llama-2-13b"] = Llama(5120, 13824, 40, 40, 40, 32000, 4096),
    };

    public static IEnumerable<string> Names => Configs.Keys;

    /// <summary>The configuration called <paramref name="name"/> (case-insensitive); FormatException listing the names otherwise.</summary>
    public static LlamaConfig Get(string name) =>
        Configs.TryGetValue(name.Trim(), out var c) ? c
            : throw new SettingException($"{PlanSettings.Config}: unknown model '{name}' (built in: {string.Join(", ", Configs.Keys)})");

    /// <summary>The first <paramref name="layers"/> layers of <paramref name="c"/>, with <paramref name="vocab"/> tokens when given.</summary>
    public static LlamaConfig Slice(LlamaConfig c, int layers, int? vocab = null) => c with
    {
        NLayers = layers,
        VocabSize = vocab ?? c.VocabSize,
        BosId = Math.Min(c.BosId, (vocab ?? c.VocabSize) - 1),
        EosId = Math.Min(c.EosId, (vocab ?? c.VocabSize) - 1),
    };

    /// <summary>
    /// Random weights for <paramref name="c"/>: uniform with standard deviation <paramref name="std"/> (norm weights 1),
    /// from a seeded xorshift generator, so a multi-gigabyte model costs about a second per billion values.
    /// </summary>
    public static LlamaWeights RandomWeights(LlamaConfig c, int seed = 1, float std = 0.02f)
    {
        ulong state = 0x9E3779B97F4A7C15UL ^ (ulong)(uint)seed * 0xBF58476D1CE4E5B9UL;
        float scale = std * MathF.Sqrt(3f) * 2f / (1UL << 24);
        float[] R(long n)
        {
            var a = new float[n];
            for (long i = 0; i < n; i++)
            {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                a[i] = ((long)(state >> 40) - (1L << 23)) * scale;
            }
            return a;
        }
        float[] Ones(int n) { var a = new float[n]; Array.Fill(a, 1f); return a; }
        return new LlamaWeights
        {
            TokenEmbedding = R((long)c.VocabSize * c.Dim),
            Classifier = c.TiedClassifier ? null : R((long)c.VocabSize * c.Dim),
            FinalNorm = Ones(c.Dim),
            Layers = [.. Enumerable.Range(0, c.NLayers).Select(_ => new LlamaLayerWeights
            {
                AttnNorm = Ones(c.Dim),
                FfnNorm = Ones(c.Dim),
                Wq = R((long)c.QDim * c.Dim),
                Wk = R((long)c.KvDim * c.Dim),
                Wv = R((long)c.KvDim * c.Dim),
                Wo = R((long)c.Dim * c.QDim),
                WGate = R((long)c.HiddenDim * c.Dim),
                WUp = R((long)c.HiddenDim * c.Dim),
                WDown = R((long)c.Dim * c.HiddenDim),
                Bq = c.AttentionBias ? new float[c.QDim] : null,
                Bk = c.AttentionBias ? new float[c.KvDim] : null,
                Bv = c.AttentionBias ? new float[c.KvDim] : null,
                Bo = c.OutputBias ? new float[c.Dim] : null,
                BGate = c.MlpBias ? new float[c.HiddenDim] : null,
                BUp = c.MlpBias ? new float[c.HiddenDim] : null,
                BDown = c.MlpBias ? new float[c.Dim] : null,
            })],
        };
    }
}

/// <summary>A model's configuration without loading its weights (HF config.json, GGUF metadata; llama2.c is loaded).</summary>
public static class ModelConfigReader
{
    public static LlamaConfig Read(string path)
    {
        if (Directory.Exists(path) && File.Exists(Path.Combine(path, Formats.HfCheckpoint.ConfigFile)))
            return Formats.HfCheckpoint.ReadConfig(Path.Combine(path, Formats.HfCheckpoint.ConfigFile));
        if (Path.GetFileName(path).Equals(Formats.HfCheckpoint.ConfigFile, StringComparison.OrdinalIgnoreCase)) return Formats.HfCheckpoint.ReadConfig(path);
        if (File.Exists(path) && path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            return Formats.GgufLlama.ReadConfig(Formats.GgufFile.Open(path));
        return ModelLoader.Load(path).Config;
    }
}
