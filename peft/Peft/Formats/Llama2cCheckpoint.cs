// llama2.c checkpoints: legacy v0 (7 int32 header, float32 arrays, run.c layout) read and write,
// and v1 ("ak42" magic, 256-byte header, norms first) read. RoPE layout is interleaved pairs.
using System.Runtime.InteropServices;
using VkPeft.Peft.Models;

namespace VkPeft.Peft.Formats;

public static class Llama2cCheckpoint
{
    public const uint MagicV1 = 0x616b3432; // "ak42"
    public const int HeaderBytesV0 = 28;
    public const int HeaderBytesV1 = 256;

    /// <summary>File layout version found in a llama2.c checkpoint.</summary>
    public static int DetectVersion(string path)
    {
        using var fs = OpenRead(path);
        Span<byte> head = stackalloc byte[8];
        if (fs.Length < 4) throw new ModelFormatException(path, "header", $"file is {fs.Length} bytes, too short for a llama2.c header");
        int n = fs.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        uint magic = BitConverter.ToUInt32(head[..4]);
        if (magic != MagicV1) return 0;
        if (n < 8) throw new ModelFormatException(path, "version", "file ends inside the v1 header");
        return BitConverter.ToInt32(head[4..8]);
    }

    /// <summary>Reads a v0 or v1 checkpoint into float32 weights.</summary>
    public static (LlamaConfig Config, LlamaWeights Weights) Read(string path)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("llama2.c files are little-endian");
        using var fs = OpenRead(path);
        int version = DetectVersion(path);
        if (version is not (0 or 1))
            throw new ModelFormatException(path, "version",
                $"llama2.c format version {version} is not supported (only legacy v0 and float32 v1; v2 is int8-quantized)");

        int headerBytes = version == 0 ? HeaderBytesV0 : HeaderBytesV1;
        if (fs.Length < headerBytes)
            throw new ModelFormatException(path, "header", $"truncated: file is {fs.Length} bytes, the v{version} header needs {headerBytes}");
        var header = new byte[headerBytes];
        fs.ReadExactly(header);
        int o = version == 0 ? 0 : 8;
        int[] h = new int[7];
        for (int i = 0; i < 7; i++) h[i] = BitConverter.ToInt32(header, o + 4 * i);
        string[] names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
        bool shared;
        int vocab = h[5];
        if (version == 0)
        {
            shared = vocab > 0;
            vocab = vocab == int.MinValue ? 0 : Math.Abs(vocab);   // int.MinValue has no positive counterpart: implausible
        }
        else
        {
            byte flag = header[36];
            if (flag > 1) throw new ModelFormatException(path, "shared_classifier", $"flag must be 0 or 1, got {flag}");
            shared = flag == 1;
        }
        for (int i = 0; i < 7; i++)
        {
            int v = i == 5 ? vocab : h[i];
            if (v <= 0 || v > (1 << 24))
                throw new ModelFormatException(path, names[i],
                    $"header value {h[i]} is not a plausible size (wrong file type? a llama2.c v0 file starts with 7 int32 sizes)");
        }
        if (h[0] % h[3] != 0)
            throw new ModelFormatException(path, "n_heads", $"dim {h[0]} is not a multiple of n_heads {h[3]}");

        var config = new LlamaConfig
        {
            Architecture = "llama",
            Dim = h[0],
            HiddenDim = h[1],
            NLayers = h[2],
            NHeads = h[3],
            NKvHeads = h[4],
            HeadDim = h[0] / h[3],
            VocabSize = vocab,
            MaxSeqLen = h[6],
            RmsNormEps = 1e-5,
            RopeTheta = 10000.0,
            RopeLayout = RopeLayout.InterleavedPairs,
            TiedClassifier = shared,
            BosId = 1,
            EosId = 2,
        };
        config.Validate(path);
        // Every layer stores at least its two norm vectors: refuse a layer count the file cannot hold before the
        // per-layer layout is built.
        if ((long)config.NLayers * config.Dim * 8 > fs.Length)
            throw new ModelFormatException(path, "n_layers", $"{config.NLayers} layers of dim {config.Dim} cannot fit in a {fs.Length}-byte file");

        var segments = Layout(config, version);
        long expected = headerBytes;
        foreach (var s in segments) expected += 4L * s.Count;
        if (fs.Length < expected)
        {
            long at = headerBytes;
            foreach (var s in segments)
            {
                if (at + 4L * s.Count > fs.Length)
                    throw new ModelFormatException(path, s.Name,
                        $"truncated: the file is {fs.Length} bytes but the header implies {expected}; it ends inside '{s.Name}'");
                at += 4L * s.Count;
            }
        }
        if (fs.Length > expected)
            throw new ModelFormatException(path, "file size",
                $"{fs.Length - expected} trailing bytes: the header implies exactly {expected} bytes (wrong vocab_size or dims?)");

        var arrays = new Dictionary<(LlamaTensorKind, int), float[]>();
        foreach (var s in segments)
        {
            if (s.Kind is null)
            {
                fs.Seek(4L * s.Count, SeekOrigin.Current);
                continue;
            }
            var data = new float[s.Count];   // fits: the file-size check above bounds every segment by the bytes present
            fs.ReadExactly(MemoryMarshal.AsBytes(data.AsSpan()));
            arrays[(s.Kind.Value, s.Layer)] = data;
        }
        var weights = LlamaWeights.Build(config, (kind, layer, _) => arrays[(kind, layer)]);
        weights.Validate(config, path);
        return (config, weights);
    }

    /// <summary>Writes a legacy v0 file (float32, run.c layout, freq_cis included). Atomic: temp file then rename.</summary>
    public static void WriteV0(string path, LlamaConfig config, LlamaWeights weights)
    {
        config.Validate(path);
        weights.Validate(config, path);
        if (config.RopeLayout != RopeLayout.InterleavedPairs)
            throw new ArgumentException("llama2.c files use interleaved-pairs RoPE; permute q/k rows first", nameof(config));
        if (config.AttentionBias || config.OutputBias || config.MlpBias)
            throw new ArgumentException("llama2.c v0 files hold no biases (this model has q/k/v, o_proj or MLP biases); export safetensors or gguf instead", nameof(config));
        if (config.HeadDim * config.NHeads != config.Dim || config.RopeScaling is not null
            || config.RopeTheta != 10000.0 || weights.RopeFreqFactors is not null)
            throw new ArgumentException("llama2.c v0 cannot store head_dim != dim/n_heads, rope scaling or a rope theta other than 10000", nameof(config));

        string tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                int vocab = config.TiedClassifier ? config.VocabSize : -config.VocabSize;
                int[] header = [config.Dim, config.HiddenDim, config.NLayers, config.NHeads, config.NKvHeads, vocab, config.MaxSeqLen];
                fs.Write(MemoryMarshal.AsBytes(header.AsSpan()));
                foreach (var s in Layout(config, 0))
                {
                    float[] data = s.Kind is { } k ? Pick(weights, k, s.Layer) : FreqCis(config, s.Name == "freq_cis_imag");
                    fs.Write(MemoryMarshal.AsBytes(data.AsSpan()));
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private readonly record struct Segment(string Name, LlamaTensorKind? Kind, int Layer, long Count);

    private static List<Segment> Layout(LlamaConfig c, int version)
    {
        var list = new List<Segment>();
        // Header sizes are at most 2^24 each, so a product of two stays far inside a long; the caller compares the
        // total with the file size before anything is allocated.
        long Size(LlamaTensorKind k)
        {
            long n = 1;
            foreach (int d in LlamaWeights.ShapeOf(c, k)) n *= d;
            return n;
        }
        void PerLayer(string name, LlamaTensorKind k)
        {
            for (int l = 0; l < c.NLayers; l++) list.Add(new Segment($"{name}[{l}]", k, l, Size(k)));
        }
        void Global(string name, LlamaTensorKind k) => list.Add(new Segment(name, k, -1, Size(k)));

        if (version == 0)
        {
            Global("token_embedding_table", LlamaTensorKind.TokenEmbedding);
            PerLayer("rms_att_weight", LlamaTensorKind.AttnNorm);
            PerLayer("wq", LlamaTensorKind.Wq);
            PerLayer("wk", LlamaTensorKind.Wk);
            PerLayer("wv", LlamaTensorKind.Wv);
            PerLayer("wo", LlamaTensorKind.Wo);
            PerLayer("rms_ffn_weight", LlamaTensorKind.FfnNorm);
            PerLayer("w1", LlamaTensorKind.WGate);
            PerLayer("w2", LlamaTensorKind.WDown);
            PerLayer("w3", LlamaTensorKind.WUp);
            Global("rms_final_weight", LlamaTensorKind.FinalNorm);
            long half = (long)c.MaxSeqLen * (c.HeadDim / 2);
            list.Add(new Segment("freq_cis_real", null, -1, half));
            list.Add(new Segment("freq_cis_imag", null, -1, half));
        }
        else
        {
            PerLayer("attention_norm", LlamaTensorKind.AttnNorm);
            PerLayer("ffn_norm", LlamaTensorKind.FfnNorm);
            Global("norm", LlamaTensorKind.FinalNorm);
            Global("tok_embeddings", LlamaTensorKind.TokenEmbedding);
            PerLayer("wq", LlamaTensorKind.Wq);
            PerLayer("wk", LlamaTensorKind.Wk);
            PerLayer("wv", LlamaTensorKind.Wv);
            PerLayer("wo", LlamaTensorKind.Wo);
            PerLayer("w1", LlamaTensorKind.WGate);
            PerLayer("w2", LlamaTensorKind.WDown);
            PerLayer("w3", LlamaTensorKind.WUp);
        }
        if (!c.TiedClassifier) Global(version == 0 ? "wcls" : "output", LlamaTensorKind.Classifier);
        return list;
    }

    private static float[] Pick(LlamaWeights w, LlamaTensorKind kind, int layer) => kind switch
    {
        LlamaTensorKind.TokenEmbedding => w.TokenEmbedding,
        LlamaTensorKind.FinalNorm => w.FinalNorm,
        LlamaTensorKind.Classifier => w.Classifier!,
        LlamaTensorKind.AttnNorm => w.Layers[layer].AttnNorm,
        LlamaTensorKind.Wq => w.Layers[layer].Wq,
        LlamaTensorKind.Wk => w.Layers[layer].Wk,
        LlamaTensorKind.Wv => w.Layers[layer].Wv,
        LlamaTensorKind.Wo => w.Layers[layer].Wo,
        LlamaTensorKind.FfnNorm => w.Layers[layer].FfnNorm,
        LlamaTensorKind.WGate => w.Layers[layer].WGate,
        LlamaTensorKind.WUp => w.Layers[layer].WUp,
        LlamaTensorKind.WDown => w.Layers[layer].WDown,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    private static float[] FreqCis(LlamaConfig c, bool imag)
    {
        int half = c.HeadDim / 2;
        var data = new float[c.MaxSeqLen * half];
        for (int p = 0; p < c.MaxSeqLen; p++)
        {
            for (int i = 0; i < half; i++)
            {
                double angle = p * Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
                data[p * half + i] = (float)(imag ? Math.Sin(angle) : Math.Cos(angle));
            }
        }
        return data;
    }

    private static FileStream OpenRead(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"model file not found: {path}", path);
        return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
    }
}
