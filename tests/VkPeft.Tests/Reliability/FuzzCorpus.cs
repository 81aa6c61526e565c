// Valid seed inputs for the loader fuzzer, generated in code from a tiny random model (no third-party files): each
// target names its files, which of them are mutated and how, and loads them through the code the CLI uses.
using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;
using VkPeft.Peft.Training;
using VkPeft.Quant;
using VkPeft.Tests.Export;
using VkPeft.Tests.Models;
using VkPeft.Tests.Training;

namespace VkPeft.Tests.Reliability;

/// <summary>One fuzzed input: its files (relative path → bytes), which are mutated, and the loader to run on a folder.</summary>
public sealed record FuzzTarget(string Name, IReadOnlyDictionary<string, byte[]> Files, IReadOnlyList<(string File, FileKind Kind)> Mutable,
    Action<string> Load)
{
    /// <summary>The structure of each binary mutable file, walked once from the valid bytes.</summary>
    public Dictionary<string, FileStructure> Structures { get; } = [];

    /// <summary>Runs after a mutated file is written (folder, mutated file): e.g. re-signs a checkpoint manifest.</summary>
    public Action<string, string>? AfterWrite { get; init; }
}

public static class FuzzCorpus
{
    private static readonly Lazy<(LlamaConfig Config, LlamaWeights Weights)> Tiny = new(() => TinyModels.Random(41, dim: 32, hidden: 48, layers: 1, vocab: 37));

    public static LlamaConfig Config => Tiny.Value.Config;
    public static LlamaWeights Weights => Tiny.Value.Weights;

    /// <summary>The 37 pieces of the tiny vocabulary: control tokens, then space and lowercase letters, then digraphs.</summary>
    public static readonly string[] Pieces =
    [
        "<unk>", "<s>", "</s>", " ", .. Enumerable.Range('a', 26).Select(c => ((char)c).ToString()), " t", "he", " a", "in", "er", "an", " o",
    ];

    public static ScoreMergeTokenizer Tokenizer() =>
        new(Pieces.Select(p => p.StartsWith('<') ? Encoding.UTF8.GetBytes(p) : Encoding.UTF8.GetBytes(p)).ToList(),
            Pieces.Select((p, i) => p.Length > 1 && !p.StartsWith('<') ? -i : float.NegativeInfinity).ToList(), 1, 2, [0, 1, 2]);

    public static string[] Names =>
    [
        "llama2c", "llama2c-tokenizer", "gguf", "gguf-lora", "safetensors", "safetensors-sharded", "safetensors-bnb", "hf-config",
        "tokenizer-json", "tokenizer-model", "peft-adapter", "vkpeft-adapter", "checkpoint", "data-txt", "data-jsonl",
    ];

    public static FuzzTarget Create(string name) => name switch
    {
        "llama2c" => Llama2c(mutateTokenizer: false),
        "llama2c-tokenizer" => Llama2c(mutateTokenizer: true),
        "gguf" => GgufModel(),
        "gguf-lora" => GgufLora(),
        "safetensors" => Hf(name, sharded: false, bnb: false, FileKindFor: "model.safetensors"),
        "safetensors-sharded" => Hf(name, sharded: true, bnb: false, FileKindFor: null),
        "safetensors-bnb" => Hf(name, sharded: false, bnb: true, FileKindFor: "model.safetensors"),
        "hf-config" => Hf(name, sharded: false, bnb: false, FileKindFor: "config.json"),
        "tokenizer-json" => Hf(name, sharded: false, bnb: false, FileKindFor: "tokenizer.json"),
        "tokenizer-model" => Hf(name, sharded: false, bnb: false, FileKindFor: "tokenizer.model"),
        "peft-adapter" => Adapter(peft: true),
        "vkpeft-adapter" => Adapter(peft: false),
        "checkpoint" => Checkpoint(),
        "data-txt" => Data(jsonl: false),
        "data-jsonl" => Data(jsonl: true),
        _ => throw new ArgumentException(name),
    };

    // ------------------------------------------------------------------ targets

    private static FuzzTarget Llama2c(bool mutateTokenizer)
    {
        using var dir = new TempDir();
        Llama2cCheckpoint.WriteV0(dir.File("model.bin"), Config, Weights);
        Llama2cTokenizer.Write(dir.File("tokenizer.bin"), Tokenizer());
        var files = new Dictionary<string, byte[]>
        {
            ["model.bin"] = File.ReadAllBytes(dir.File("model.bin")),
            ["tokenizer.bin"] = File.ReadAllBytes(dir.File("tokenizer.bin")),
        };
        string file = mutateTokenizer ? "tokenizer.bin" : "model.bin";
        var t = new FuzzTarget(mutateTokenizer ? "llama2c-tokenizer" : "llama2c", files, [(file, FileKind.Binary)],
            d => ModelLoader.Load(Path.Combine(d, "model.bin")));
        t.Structures[file] = mutateTokenizer ? TokenizerBinStructure(files[file]) : Llama2cStructure(files[file]);
        return t;
    }

    private static FuzzTarget GgufModel()
    {
        using var dir = new TempDir();
        var vocab = Pieces.Select((p, i) => (p, i < 3 ? 0f : -(float)i)).ToList();
        TestWriters.StoriesGguf(Config, Weights, vocab, q8: true).Write(dir.File("model.gguf"));
        var files = new Dictionary<string, byte[]> { ["model.gguf"] = File.ReadAllBytes(dir.File("model.gguf")) };
        var t = new FuzzTarget("gguf", files, [("model.gguf", FileKind.Binary)], d => ModelLoader.Load(Path.Combine(d, "model.gguf")));
        t.Structures["model.gguf"] = GgufStructure(files["model.gguf"]);
        return t;
    }

    private static FuzzTarget GgufLora()
    {
        using var dir = new TempDir();
        var adapter = ExportTestSupport.RandomLora(Config, 3, targets: [TargetModule.Q, TargetModule.V]);
        var model = new LoadedModel(Config, Weights, Tokenizer(), new ModelSourceInfo(ModelSourceFormat.Llama2cV0, dir.File("model.bin"), null, null));
        Exporter.Export(model, adapter, new ExportOptions { Format = ExportFormat.GgufLora, OutPath = dir.File("adapter.gguf") });
        var files = new Dictionary<string, byte[]> { ["adapter.gguf"] = File.ReadAllBytes(dir.File("adapter.gguf")) };
        var t = new FuzzTarget("gguf-lora", files, [("adapter.gguf", FileKind.Binary)], d =>
        {
            var f = GgufFile.Open(Path.Combine(d, "adapter.gguf"));
            _ = f.GetString("general.type");
            foreach (var info in f.Tensors) f.ReadFloat32(info.Name);
        });
        t.Structures["adapter.gguf"] = GgufStructure(files["adapter.gguf"]);
        return t;
    }

    private static FuzzTarget Hf(string name, bool sharded, bool bnb, string? FileKindFor)
    {
        using var dir = new TempDir();
        var tensors = TestWriters.HfTensors(Config, Weights);
        var files = new Dictionary<string, byte[]>
        {
            ["config.json"] = Encoding.UTF8.GetBytes(TestWriters.HfConfigJson(Config)),
        };
        // The SentencePiece folder carries tokenizer.model alone (tokenizer.json would be preferred over it).
        if (FileKindFor == "tokenizer.model") files["tokenizer.model"] = SentencePieceModel();
        else files["tokenizer.json"] = Encoding.UTF8.GetBytes(TokenizerJson());
        var entries = new List<SafeTensorsWriter.Entry>();
        foreach (var (n, shape, data) in tensors)
        {
            if (bnb && shape.Length == 2 && n.Contains(".layers."))
                entries.AddRange(QuantizedSafeTensors.Bnb4BitEntries(n,
                    QuantizedLinearWeight.Bnb4Bit(data, (int)shape[0], (int)shape[1], doubleQuant: n.Contains("mlp"), tensorName: n), "float32"));
            else entries.Add(SafeTensorsWriter.FromFloat32(n, shape, data, n.Contains("norm") ? "F32" : "F16"));
        }
        if (sharded)
        {
            int half = entries.Count / 2;
            SafeTensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"), entries.Take(half));
            SafeTensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"), entries.Skip(half));
            var map = new JsonObject();
            foreach (var (e, i) in entries.Select((e, i) => (e, i)))
                map[e.Name] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
            files[HfCheckpoint.IndexFile] = Encoding.UTF8.GetBytes(new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = 0 }, ["weight_map"] = map }.ToJsonString());
            files["model-00001-of-00002.safetensors"] = File.ReadAllBytes(dir.File("model-00001-of-00002.safetensors"));
            files["model-00002-of-00002.safetensors"] = File.ReadAllBytes(dir.File("model-00002-of-00002.safetensors"));
        }
        else
        {
            SafeTensorsWriter.Write(dir.File("model.safetensors"), entries);
            files["model.safetensors"] = File.ReadAllBytes(dir.File("model.safetensors"));
        }
        List<(string, FileKind)> mutable = FileKindFor is { } only
            ? [(only, only.EndsWith(".json", StringComparison.Ordinal) ? FileKind.Json : FileKind.Binary)]
            : [(HfCheckpoint.IndexFile, FileKind.Json), ("model-00001-of-00002.safetensors", FileKind.Binary), ("model-00002-of-00002.safetensors", FileKind.Binary)];
        var t = new FuzzTarget(name, files, mutable, d => ModelLoader.Load(d));
        foreach (var (f, k) in mutable)
            if (k == FileKind.Binary) t.Structures[f] = f == "tokenizer.model" ? ProtobufStructure(files[f]) : SafetensorsStructure(files[f]);
        return t;
    }

    private static FuzzTarget Adapter(bool peft)
    {
        using var dir = new TempDir();
        var adapter = ExportTestSupport.RandomLora(Config, 5, targets: [TargetModule.Q, TargetModule.K, TargetModule.Down]);
        string sub = dir.File("a");
        if (peft) AdapterIO.SavePeft(sub, adapter, Config);
        else AdapterIO.SaveVkPeft(sub, adapter, Config);
        var files = Directory.GetFiles(sub).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        var mutable = files.Keys.Select(f => (f, f.EndsWith(".json", StringComparison.Ordinal) ? FileKind.Json : FileKind.Binary)).ToList();
        var t = new FuzzTarget(peft ? "peft-adapter" : "vkpeft-adapter", files, mutable, d => AdapterIO.Load(d, Config));
        foreach (var (f, k) in mutable)
            if (k == FileKind.Binary) t.Structures[f] = SafetensorsStructure(files[f]);
        return t;
    }

    /// <summary>
    /// A training checkpoint folder. After a mutation the manifest is re-signed (unless it is the mutated file), so the
    /// mutated state, adapter and optimizer reach the parsers instead of stopping at the checksum.
    /// </summary>
    private static FuzzTarget Checkpoint()
    {
        using var dir = new TempDir();
        var adapter = ExportTestSupport.RandomLora(Config, 9, targets: [TargetModule.V, TargetModule.Up]);
        var entries = new List<SafeTensorsWriter.Entry>();
        foreach (var (name, tensor) in adapter.Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            entries.Add(SafeTensorsWriter.FromFloat32(name + ".m", tensor.Shape, tensor.Data));
            entries.Add(SafeTensorsWriter.FromFloat32(name + ".v", tensor.Shape, tensor.Data.Select(MathF.Abs).ToArray()));
        }
        var state = new JsonObject
        {
            ["format"] = "vkpeft-trainer-state/1",
            ["train_curve"] = new JsonArray(new JsonArray(1, 2.5)),
            ["eval_curve"] = new JsonArray(),
            ["csv"] = new JsonArray("1,2.5,,0.001,100.0,0.5"),
        };
        TrainCheckpoint.Save(dir.Path, 1, adapter, Config, entries, state, keep: 1);
        string folder = TrainCheckpoint.FolderOf(dir.Path, 1);
        string rel = Path.GetRelativePath(dir.Path, folder);
        var files = Directory.GetFiles(folder).ToDictionary(f => Path.Combine(rel, Path.GetFileName(f)), File.ReadAllBytes);
        var mutable = files.Keys.Select(f => (f, f.EndsWith(".json", StringComparison.Ordinal) ? FileKind.Json
            : f.EndsWith(".safetensors", StringComparison.Ordinal) ? FileKind.Binary : FileKind.Text)).ToList();
        var names = adapter.Tensors.Keys.ToList();
        var t = new FuzzTarget("checkpoint", files, mutable, d => TrainCheckpoint.Load(d, Config, names))
        {
            AfterWrite = (d, mutated) =>
            {
                if (mutated.EndsWith(TrainCheckpoint.ManifestFile, StringComparison.Ordinal)) return;
                string f = Path.Combine(d, rel);
                var manifest = new StringBuilder();
                foreach (var file in Directory.GetFiles(f).Where(x => !x.EndsWith(TrainCheckpoint.ManifestFile, StringComparison.Ordinal)).OrderBy(x => x, StringComparer.Ordinal))
                    manifest.Append($"{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(file)))}  {Path.GetFileName(file)}\n");
                File.WriteAllText(Path.Combine(f, TrainCheckpoint.ManifestFile), manifest.ToString());
            },
        };
        foreach (var (f, k) in mutable)
            if (k == FileKind.Binary) t.Structures[f] = SafetensorsStructure(files[f]);
        return t;
    }

    private static FuzzTarget Data(bool jsonl)
    {
        string[] docs = ["the cat sat in a hat", "a dog ran to the tree and back", "he ate an apple", "she sang a song to the moon", "it was a fine day"];
        string file = jsonl ? "data.jsonl" : "data.txt";
        string text = jsonl
            ? string.Join('\n', docs.Select((d, i) => i % 2 == 0 ? new JsonObject { ["text"] = d }.ToJsonString()
                : new JsonObject { ["instruction"] = "say", ["input"] = "", ["output"] = d }.ToJsonString())) + "\n"
            : string.Join('\n', docs) + "\n";
        var files = new Dictionary<string, byte[]> { [file] = Encoding.UTF8.GetBytes(text) };
        var tok = Tokenizer();
        return new FuzzTarget(jsonl ? "data-jsonl" : "data-txt", files, [(file, jsonl ? FileKind.Jsonl : FileKind.Text)],
            d => TrainingData.Load(tok, Path.Combine(d, file), null, 0.2, 8, 1));
    }

    /// <summary>A Metaspace BPE tokenizer.json over the tiny vocabulary (SentencePiece-converted style).</summary>
    public static string TokenizerJson()
    {
        var vocab = new JsonObject();
        for (int i = 0; i < Pieces.Length; i++) vocab[Pieces[i].Replace(' ', '\u2581')] = i;
        var merges = new JsonArray("\u2581 t", "h e", "\u2581 a", "i n", "e r", "a n", "\u2581 o");
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 0, ["content"] = "<unk>", ["special"] = true },
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" }) },
            ["pre_tokenizer"] = null,
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges, ["byte_fallback"] = false },
        };
        return root.ToJsonString();
    }

    /// <summary>
    /// A SentencePiece BPE tokenizer.model (protobuf ModelProto) over the tiny vocabulary: pieces = 1 {piece = 1,
    /// score = 2, type = 3}, trainer_spec = 2 {model_type = 3 (BPE = 2), vocab_size = 4, unk/bos/eos_id = 40/41/42},
    /// normalizer_spec = 3 {name = 1, add_dummy_prefix = 3, remove_extra_whitespaces = 4, escape_whitespaces = 5}.
    /// </summary>
    public static byte[] SentencePieceModel()
    {
        var model = new List<byte>();
        for (int i = 0; i < Pieces.Length; i++)
        {
            var piece = new List<byte>();
            ProtoBytes(piece, 1, Encoding.UTF8.GetBytes(Pieces[i].Replace(' ', '\u2581')));
            ProtoTag(piece, 2, 5);
            piece.AddRange(BitConverter.GetBytes(i < 3 ? 0f : Pieces[i].Length > 1 ? -(float)i : -1000f - i));
            ProtoVarint(piece, 3, i == 0 ? 2UL : i < 3 ? 3UL : 1UL);   // UNKNOWN, CONTROL, NORMAL
            ProtoBytes(model, 1, [.. piece]);
        }
        var trainer = new List<byte>();
        ProtoVarint(trainer, 3, 2);
        ProtoVarint(trainer, 4, (ulong)Pieces.Length);
        ProtoVarint(trainer, 40, 0);
        ProtoVarint(trainer, 41, 1);
        ProtoVarint(trainer, 42, 2);
        ProtoBytes(model, 2, [.. trainer]);
        var normalizer = new List<byte>();
        ProtoBytes(normalizer, 1, "identity"u8.ToArray());
        ProtoVarint(normalizer, 3, 1);
        ProtoVarint(normalizer, 4, 0);
        ProtoVarint(normalizer, 5, 1);
        ProtoBytes(model, 3, [.. normalizer]);
        return [.. model];
    }

    private static void ProtoRaw(List<byte> to, ulong v)
    {
        for (; v >= 0x80; v >>= 7) to.Add((byte)(v | 0x80));
        to.Add((byte)v);
    }

    private static void ProtoTag(List<byte> to, int field, int wire) => ProtoRaw(to, (ulong)(field << 3 | wire));

    private static void ProtoVarint(List<byte> to, int field, ulong v)
    {
        ProtoTag(to, field, 0);
        ProtoRaw(to, v);
    }

    private static void ProtoBytes(List<byte> to, int field, byte[] bytes)
    {
        ProtoTag(to, field, 2);
        ProtoRaw(to, (ulong)bytes.Length);
        to.AddRange(bytes);
    }

    // ------------------------------------------------------------------ structure walkers (independent of the readers)

    /// <summary>
    /// A protobuf message walked by wire type: every tag, length and varint value (mutated as varints), the piece strings,
    /// and each field's end. The top-level fields 1-3 of a SentencePiece ModelProto are messages and are walked too.
    /// </summary>
    public static FileStructure ProtobufStructure(byte[] b)
    {
        var s = new FileStructure();
        void Walk(int start, int end, string path, bool topLevel)
        {
            int p = start;
            (ulong Value, int At, int Length) Varint()
            {
                int at = p;
                ulong v = 0;
                for (int shift = 0; ; shift += 7)
                {
                    byte x = b[p++];
                    v |= (ulong)(x & 0x7F) << shift;
                    if (x < 0x80) return (v, at, p - at);
                }
            }
            for (int i = 0; p < end; i++)
            {
                var tag = Varint();
                int field = (int)(tag.Value >> 3), wire = (int)(tag.Value & 7);
                string name = $"{path}.{field}[{i}]";
                s.Varints.Add((tag.At, tag.Length, name + ".tag"));
                switch (wire)
                {
                    case 0:
                        {
                            var v = Varint();
                            s.Varints.Add((v.At, v.Length, name));
                            break;
                        }
                    case 1: p += 8; break;
                    case 5: p += 4; break;
                    case 2:
                        {
                            var len = Varint();
                            s.Varints.Add((len.At, len.Length, name + ".length"));
                            if (topLevel && field is 1 or 2 or 3) Walk(p, p + (int)len.Value, name, topLevel: false);
                            else s.Strings.Add((p, (int)len.Value));
                            p += (int)len.Value;
                            break;
                        }
                    default: throw new InvalidDataException($"wire type {wire}");
                }
                s.Boundaries.Add(p);
            }
        }
        Walk(0, b.Length, "model", topLevel: true);
        return s;
    }

    public static FileStructure SafetensorsStructure(byte[] b)
    {
        var s = new FileStructure();
        s.Int(0, 8, "header_length");
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(b);
        s.Json = (8, n);
        s.Boundaries.Add(8);
        s.Boundaries.Add(8 + n);
        var header = JsonNode.Parse(b.AsSpan(8, n))!.AsObject();
        foreach (var (name, e) in header)
        {
            if (name == "__metadata__") continue;
            var off = e!["data_offsets"]!.AsArray();
            s.Boundaries.Add(8 + n + (int)off[0]!.GetValue<long>());
            s.Boundaries.Add(8 + n + (int)off[1]!.GetValue<long>());
        }
        s.Boundaries.Add(b.Length);
        return s;
    }

    public static FileStructure GgufStructure(byte[] b)
    {
        var s = new FileStructure();
        int p = 0;
        void U32(string name) { s.Int(p, 4, name); p += 4; }
        ulong U64(string name) { s.Int(p, 8, name); ulong v = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(p)); p += 8; return v; }
        void Str(string name)
        {
            int len = (int)U64(name + ".len");
            s.Strings.Add((p, len));
            p += len;
        }
        void Value(uint type, string name)
        {
            switch (type)
            {
                case 0 or 1 or 7: p += 1; break;
                case 2 or 3: p += 2; break;
                case 4 or 5 or 6: p += 4; break;
                case 10 or 11 or 12: p += 8; break;
                case 8: Str(name); break;
                case 9:
                    {
                        uint et = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p));
                        U32(name + ".element_type");
                        ulong count = U64(name + ".count");
                        for (ulong i = 0; i < count; i++) Value(et, name);
                        break;
                    }
                default: throw new InvalidDataException($"value type {type}");
            }
        }
        U32("magic");
        U32("version");
        ulong tensors = U64("tensor_count");
        ulong kvs = U64("kv_count");
        s.Boundaries.Add(p);
        for (ulong i = 0; i < kvs; i++)
        {
            Str($"kv[{i}].key");
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p));
            U32($"kv[{i}].type");
            Value(type, $"kv[{i}]");
            s.Boundaries.Add(p);
        }
        for (ulong i = 0; i < tensors; i++)
        {
            Str($"tensor[{i}].name");
            uint dims = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(p));
            U32($"tensor[{i}].n_dims");
            for (uint d = 0; d < dims; d++) U64($"tensor[{i}].ne[{d}]");
            U32($"tensor[{i}].type");
            U64($"tensor[{i}].offset");
            s.Boundaries.Add(p);
        }
        s.Boundaries.Add(b.Length);
        return s;
    }

    public static FileStructure Llama2cStructure(byte[] b)
    {
        var s = new FileStructure();
        string[] names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
        for (int i = 0; i < 7; i++) s.Int(4 * i, 4, names[i]);
        var c = Config;
        long at = 28;
        long[] segments =
        [
            c.VocabSize * c.Dim, c.NLayers * c.Dim, c.NLayers * c.QDim * c.Dim, c.NLayers * c.KvDim * c.Dim, c.NLayers * c.KvDim * c.Dim,
            c.NLayers * c.Dim * c.QDim, c.NLayers * c.Dim, c.NLayers * c.HiddenDim * c.Dim, c.NLayers * c.Dim * c.HiddenDim,
            c.NLayers * c.HiddenDim * c.Dim, c.Dim, c.MaxSeqLen * c.HeadDim / 2, c.MaxSeqLen * c.HeadDim / 2,
        ];
        s.Boundaries.Add(28);
        foreach (long n in segments) s.Boundaries.Add((int)(at += 4 * n));
        return s;
    }

    public static FileStructure TokenizerBinStructure(byte[] b)
    {
        var s = new FileStructure();
        s.Int(0, 4, "max_token_length");
        int o = 4;
        for (int i = 0; o + 8 <= b.Length; i++)
        {
            s.Boundaries.Add(o);
            s.Int(o + 4, 4, $"token[{i}].length");
            int len = BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(o + 4));
            s.Strings.Add((o + 8, len));
            o += 8 + len;
        }
        s.Boundaries.Add(b.Length);
        return s;
    }
}
