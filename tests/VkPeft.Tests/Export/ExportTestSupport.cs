// Shared pieces of the export tests: the stories260K base, random small adapters, logits helpers and a second,
// independent GGUF reader written from the spec (header, typed KVs, tensor infos, alignment, block layouts).
using System.Text;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Bottleneck;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Tests.Models;

namespace VkPeft.Tests.Export;

internal static class ExportTestSupport
{
    private static readonly Lazy<LoadedModel> BaseLazy = new(() => ModelLoader.Load(Stories260K.ModelPath));

    /// <summary>stories260K as ModelLoader returns it (llama2.c v0, interleaved q/k, tied classifier, tok512.bin).</summary>
    public static LoadedModel Base => BaseLazy.Value;

    public static int[] Tokens => Stories260K.Ref.TokenIds;

    /// <summary>
    /// A QA-LoRA adapter with g = 32 on an INT4 base of stories260K, on the six linears whose in-features 32 divides
    /// (ffn_down's 172 inputs are not a multiple of 32): the case a GGUF Q4_1 export merges losslessly.
    /// </summary>
    public static (AdapterWeights Adapter, TargetModule[] Targets) QaLoraForQ4_1(int seed)
    {
        TargetModule[] targets = [TargetModule.Q, TargetModule.K, TargetModule.V, TargetModule.O, TargetModule.Gate, TargetModule.Up];
        return (RandomLora(Base.Config, seed, PeftMethod.QaLora, targets: targets, groupSize: 32, baseQuant: new BaseQuant("int4", 32)), targets);
    }

    public static double[][] Logits(LlamaConfig c, LlamaWeights w) => new ReferenceForward(c, w).Forward(Tokens);

    public static double[][] Logits(LoadedModel m) => Logits(m.Config, m.Weights);

    public static double MaxAbsDiff(double[][] a, double[][] b) => Stories260K.MaxAbsDiff(a, b);

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
        return max;
    }

    /// <summary>A LoRA/QA-LoRA adapter with random A and (non-zero) B for every target of <paramref name="c"/>.</summary>
    public static AdapterWeights RandomLora(LlamaConfig c, int seed, PeftMethod? method = null, TargetModule[]? targets = null,
        int rank = 4, float alpha = 8, bool rsLora = false, int groupSize = 32, BaseQuant? baseQuant = null)
    {
        method ??= PeftMethod.Lora;
        var cfg = new AdapterConfig
        {
            Method = method,
            Settings = (method is LoraMethod { GroupPooled: true } ? new QaLoraSettings { GroupSize = groupSize } : new LoraSettings()) with
            {
                Rank = rank, Alpha = alpha, UseRsLora = rsLora,
            },
            Targets = targets ?? Enum.GetValues<TargetModule>(),
            BaseQuant = baseQuant ?? new BaseQuant("nf4", 64),
            BaseModel = "stories260K",
        };
        var rng = new Random(seed);
        var a = new AdapterWeights(cfg);
        foreach (var t in cfg.Targets)
        {
            int[] shape = LlamaWeights.ShapeOf(c, t.ToKind());
            int outF = shape[0], inF = method == PeftMethod.QaLora ? shape[1] / groupSize : shape[1];
            for (int l = 0; l < c.NLayers; l++)
            {
                a.Tensors[AdapterWeights.LoraA(l, t)] = new HostTensor(Uniform(rng, rank * inF, 0.3f), [rank, inF]);
                a.Tensors[AdapterWeights.LoraB(l, t)] = new HostTensor(Uniform(rng, outF * rank, 0.05f), [outF, rank]);
            }
        }
        return a;
    }

    /// <summary>A Houlsby bottleneck adapter with random tensors.</summary>
    public static AdapterWeights RandomBottleneck(LlamaConfig c, int seed, int bottleneck = 8)
    {
        var cfg = new AdapterConfig { Method = PeftMethod.Adapter, Settings = new BottleneckSettings { Bottleneck = bottleneck }, BaseQuant = new BaseQuant("nf4-dq", 64) };
        var rng = new Random(seed);
        var a = new AdapterWeights(cfg);
        for (int l = 0; l < c.NLayers; l++)
            foreach (var site in new[] { "attn", "mlp" })
            {
                a.Tensors[AdapterWeights.Bottleneck(l, site, "down")] = new HostTensor(Uniform(rng, bottleneck * c.Dim, 0.1f), [bottleneck, c.Dim]);
                a.Tensors[AdapterWeights.Bottleneck(l, site, "down_bias")] = new HostTensor(Uniform(rng, bottleneck, 0.1f), [bottleneck]);
                a.Tensors[AdapterWeights.Bottleneck(l, site, "up")] = new HostTensor(Uniform(rng, c.Dim * bottleneck, 0.1f), [c.Dim, bottleneck]);
                a.Tensors[AdapterWeights.Bottleneck(l, site, "up_bias")] = new HostTensor(Uniform(rng, c.Dim, 0.1f), [c.Dim]);
            }
        return a;
    }

    private static float[] Uniform(Random rng, int n, float scale)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return v;
    }

    /// <summary>Every tensor of two adapters is bit-identical.</summary>
    public static void SameTensors(AdapterWeights expected, AdapterWeights actual)
    {
        Assert.Equal(expected.Tensors.Keys.Order(StringComparer.Ordinal), actual.Tensors.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, t) in expected.Tensors)
        {
            Assert.Equal(t.Shape, actual.Tensors[name].Shape);
            Assert.True(t.Data.SequenceEqual(actual.Tensors[name].Data), $"tensor {name} differs");
        }
    }
}

/// <summary>
/// A minimal GGUF reader written from ggml docs/gguf.md and ggml-common.h, sharing no code with the library:
/// little-endian header (magic "GGUF", version, u64 counts), KV pairs with explicit type ids, tensor infos,
/// data section at the aligned end of the infos, and F32/F16/Q8_0/Q4_0/Q4_1 block decoding.
/// </summary>
internal sealed class MiniGguf
{
    public sealed record Kv(uint Type, object Value);
    public sealed record TensorInfo(string Name, ulong[] Ne, uint Type, ulong Offset);

    public uint Version { get; private init; }
    public Dictionary<string, Kv> Kvs { get; } = new(StringComparer.Ordinal);
    public List<TensorInfo> Infos { get; } = [];
    public long DataStart { get; private set; }
    public uint Alignment { get; private set; } = 32;
    private byte[] _bytes = [];

    public static MiniGguf Read(string path)
    {
        var g = new MiniGguf { _bytes = File.ReadAllBytes(path) };
        using var r = new BinaryReader(new MemoryStream(g._bytes));
        Assert.Equal("GGUF"u8.ToArray(), r.ReadBytes(4));
        var parsed = new MiniGguf { _bytes = g._bytes, Version = r.ReadUInt32() };
        ulong nTensors = r.ReadUInt64(), nKv = r.ReadUInt64();
        for (ulong i = 0; i < nKv; i++)
        {
            string key = Str(r);
            uint type = r.ReadUInt32();
            parsed.Kvs.Add(key, new Kv(type, Value(r, type)));
        }
        if (parsed.Kvs.TryGetValue("general.alignment", out var al)) parsed.Alignment = (uint)al.Value;
        for (ulong i = 0; i < nTensors; i++)
        {
            string name = Str(r);
            uint nd = r.ReadUInt32();
            var ne = new ulong[nd];
            for (int d = 0; d < nd; d++) ne[d] = r.ReadUInt64();
            parsed.Infos.Add(new TensorInfo(name, ne, r.ReadUInt32(), r.ReadUInt64()));
        }
        long pos = r.BaseStream.Position;
        parsed.DataStart = (pos + parsed.Alignment - 1) / parsed.Alignment * parsed.Alignment;
        return parsed;
    }

    private static string Str(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    private static object Value(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(), 1 => r.ReadSByte(), 2 => r.ReadUInt16(), 3 => r.ReadInt16(), 4 => r.ReadUInt32(), 5 => r.ReadInt32(),
        6 => r.ReadSingle(), 7 => r.ReadByte() != 0, 8 => Str(r), 10 => r.ReadUInt64(), 11 => r.ReadInt64(), 12 => r.ReadDouble(),
        9 => ReadArray(r),
        _ => throw new InvalidDataException($"value type {type}"),
    };

    private static (uint ElementType, object[] Items) ReadArray(BinaryReader r)
    {
        uint et = r.ReadUInt32();
        ulong n = r.ReadUInt64();
        var items = new object[n];
        for (ulong i = 0; i < n; i++) items[i] = Value(r, et);
        return (et, items);
    }

    /// <summary>Bytes per 32-weight block (or per weight for F32/F16) of the types this reader decodes.</summary>
    public static (int Weights, int Bytes) Block(uint type) => type switch
    {
        0 => (1, 4), 1 => (1, 2), 2 => (32, 18), 3 => (32, 20), 8 => (32, 34),
        _ => throw new InvalidDataException($"ggml type {type}"),
    };

    public long ByteSize(TensorInfo t)
    {
        long n = t.Ne.Aggregate(1L, (a, b) => a * (long)b);
        var (w, b) = Block(t.Type);
        return n / w * b;
    }

    /// <summary>Decodes a tensor to float32 from the spec's block layouts.</summary>
    public float[] Decode(TensorInfo t)
    {
        long n = t.Ne.Aggregate(1L, (a, b) => a * (long)b);
        var src = _bytes.AsSpan((int)(DataStart + (long)t.Offset), (int)ByteSize(t));
        var dst = new float[n];
        for (long i = 0; i < n;)
        {
            switch (t.Type)
            {
                case 0: dst[i] = BitConverter.ToSingle(src[(int)(4 * i)..]); i++; break;
                case 1: dst[i] = (float)BitConverter.ToHalf(src[(int)(2 * i)..]); i++; break;
                case 8:
                    {
                        var blk = src.Slice((int)(i / 32 * 34), 34);
                        float d = (float)BitConverter.ToHalf(blk);
                        for (int j = 0; j < 32; j++) dst[i + j] = d * (sbyte)blk[2 + j];
                        i += 32;
                        break;
                    }
                default:
                    {
                        bool q41 = t.Type == 3;
                        int bb = q41 ? 20 : 18;
                        var blk = src.Slice((int)(i / 32 * bb), bb);
                        float d = (float)BitConverter.ToHalf(blk);
                        float m = q41 ? (float)BitConverter.ToHalf(blk[2..]) : 0;
                        var qs = blk[(bb - 16)..];
                        for (int j = 0; j < 16; j++)
                        {
                            int lo = qs[j] & 15, hi = qs[j] >> 4;
                            dst[i + j] = q41 ? d * lo + m : (lo - 8) * d;
                            dst[i + j + 16] = q41 ? d * hi + m : (hi - 8) * d;
                        }
                        i += 32;
                        break;
                    }
            }
        }
        return dst;
    }

    /// <summary>Tensor data offsets are aligned, in order, padded to the alignment and end at the file end.</summary>
    public void CheckLayout()
    {
        Assert.Equal(0, DataStart % Alignment);
        long expected = 0;
        foreach (var t in Infos)
        {
            Assert.Equal(0UL, t.Offset % Alignment);
            Assert.Equal(expected, (long)t.Offset);
            expected = (long)t.Offset + ByteSize(t);
            expected = (expected + Alignment - 1) / Alignment * Alignment;
        }
        Assert.Equal(_bytes.LongLength, DataStart + expected);
    }
}
