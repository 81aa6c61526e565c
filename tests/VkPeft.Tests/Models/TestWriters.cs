// Minimal file writers written from the format specs, independent of the library's own writers,
// used to produce HF safetensors and GGUF versions of stories260K for the loader tests.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using VkPeft.Peft.Models;

namespace VkPeft.Tests.Models;

internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "vkpeft-models-" + Guid.NewGuid().ToString("N"));
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

internal static class TestWriters
{
    /// <summary>Interleaved-pairs rows -> HF rotate-half rows: within each head, HF row c·d/2+i = interleaved row 2i+c.</summary>
    public static float[] PermuteToRotateHalf(float[] w, int heads, int headDim, int cols)
    {
        var o = new float[w.Length];
        for (int h = 0; h < heads; h++)
            for (int c = 0; c < 2; c++)
                for (int i = 0; i < headDim / 2; i++)
                {
                    int dst = h * headDim + c * headDim / 2 + i, src = h * headDim + 2 * i + c;
                    Array.Copy(w, (long)src * cols, o, (long)dst * cols, cols);
                }
        return o;
    }

    /// <summary>HF tensors of a model in llama2.c layout (q/k rows permuted to rotate-half).</summary>
    public static List<(string Name, long[] Shape, float[] Data)> HfTensors(LlamaConfig c, LlamaWeights w)
    {
        var list = new List<(string, long[], float[])> { ("model.embed_tokens.weight", [c.VocabSize, c.Dim], w.TokenEmbedding) };
        for (int l = 0; l < c.NLayers; l++)
        {
            var L = w.Layers[l];
            string p = $"model.layers.{l}.";
            list.Add((p + "input_layernorm.weight", [c.Dim], L.AttnNorm));
            list.Add((p + "self_attn.q_proj.weight", [c.QDim, c.Dim], PermuteToRotateHalf(L.Wq, c.NHeads, c.HeadDim, c.Dim)));
            list.Add((p + "self_attn.k_proj.weight", [c.KvDim, c.Dim], PermuteToRotateHalf(L.Wk, c.NKvHeads, c.HeadDim, c.Dim)));
            list.Add((p + "self_attn.v_proj.weight", [c.KvDim, c.Dim], L.Wv));
            list.Add((p + "self_attn.o_proj.weight", [c.Dim, c.QDim], L.Wo));
            list.Add((p + "post_attention_layernorm.weight", [c.Dim], L.FfnNorm));
            list.Add((p + "mlp.gate_proj.weight", [c.HiddenDim, c.Dim], L.WGate));
            list.Add((p + "mlp.up_proj.weight", [c.HiddenDim, c.Dim], L.WUp));
            list.Add((p + "mlp.down_proj.weight", [c.Dim, c.HiddenDim], L.WDown));
        }
        list.Add(("model.norm.weight", [c.Dim], w.FinalNorm));
        return list;
    }

    public static string HfConfigJson(LlamaConfig c, int? intermediate = null, string modelType = "llama") => $$"""
        {"architectures": ["LlamaForCausalLM"], "model_type": "{{modelType}}", "hidden_size": {{c.Dim}},
         "intermediate_size": {{intermediate ?? c.HiddenDim}}, "num_hidden_layers": {{c.NLayers}}, "num_attention_heads": {{c.NHeads}},
         "num_key_value_heads": {{c.NKvHeads}}, "vocab_size": {{c.VocabSize}}, "max_position_embeddings": {{c.MaxSeqLen}},
         "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": true,
         "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
        """;

    /// <summary>Encodes float32 values as F32, F16 or BF16 (BF16 rounded to nearest even).</summary>
    public static byte[] Encode(float[] v, string dtype)
    {
        switch (dtype)
        {
            case "F32": return MemoryMarshal.AsBytes(v.AsSpan()).ToArray();
            case "F16":
                {
                    var b = new byte[v.Length * 2];
                    for (int i = 0; i < v.Length; i++) BitConverter.TryWriteBytes(b.AsSpan(2 * i), (Half)v[i]);
                    return b;
                }
            case "BF16":
                {
                    var b = new byte[v.Length * 2];
                    for (int i = 0; i < v.Length; i++)
                    {
                        uint bits = BitConverter.SingleToUInt32Bits(v[i]);
                        uint rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
                        b[2 * i] = (byte)rounded;
                        b[2 * i + 1] = (byte)(rounded >> 8);
                    }
                    return b;
                }
            default: throw new ArgumentException(dtype);
        }
    }

    /// <summary>safetensors from the spec: u64 header length, JSON header padded with spaces to 8 bytes, data.</summary>
    public static void WriteSafetensors(string path, IEnumerable<(string Name, string DType, long[] Shape, byte[] Data)> tensors,
        Func<string, long, long, (long, long)>? offsetOverride = null)
    {
        var sb = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long off = 0;
        var data = new List<byte[]>();
        foreach (var t in tensors)
        {
            var (b, e) = offsetOverride?.Invoke(t.Name, off, off + t.Data.Length) ?? (off, off + t.Data.Length);
            sb.Append(CultureInfo.InvariantCulture,
                $",\"{t.Name}\":{{\"dtype\":\"{t.DType}\",\"shape\":[{string.Join(",", t.Shape)}],\"data_offsets\":[{b},{e}]}}");
            off += t.Data.Length;
            data.Add(t.Data);
        }
        sb.Append('}');
        while ((sb.Length + 8) % 8 != 0) sb.Append(' ');
        using var fs = System.IO.File.Create(path);
        byte[] header = Encoding.UTF8.GetBytes(sb.ToString());
        fs.Write(BitConverter.GetBytes((ulong)header.Length));
        fs.Write(header);
        foreach (var d in data) fs.Write(d);
    }

    public static void WriteHfFolder(string dir, LlamaConfig c, LlamaWeights w, string dtype = "F32")
    {
        System.IO.File.WriteAllText(System.IO.Path.Combine(dir, "config.json"), HfConfigJson(c));
        WriteSafetensors(System.IO.Path.Combine(dir, "model.safetensors"),
            HfTensors(c, w).Select(t => (t.Name, dtype, t.Shape, Encode(t.Data, dtype))));
    }

    // ---------------- GGUF ----------------

    public sealed class Gguf
    {
        private readonly List<(string Key, Action<BinaryWriter> Write)> _kv = [];
        private readonly List<(string Name, ulong[] Ne, uint Type, byte[] Data)> _tensors = [];
        public uint Magic { get; set; } = 0x46554747;
        public Func<int, ulong, ulong>? OffsetOverride { get; set; }

        private static void Str(BinaryWriter w, string s)
        {
            byte[] b = Encoding.UTF8.GetBytes(s);
            w.Write((ulong)b.Length);
            w.Write(b);
        }

        public Gguf U32(string k, uint v) { _kv.Add((k, w => { w.Write(4u); w.Write(v); })); return this; }

        /// <summary>Replaces key <paramref name="k"/> (or adds it) with a value of GGUF type id <paramref name="type"/>.</summary>
        public Gguf Set(string k, uint type, Action<BinaryWriter> value)
        {
            int at = _kv.FindIndex(e => e.Key == k);
            (string, Action<BinaryWriter>) entry = (k, w => { w.Write(type); value(w); });
            if (at >= 0) _kv[at] = entry;
            else _kv.Add(entry);
            return this;
        }
        public Gguf F32(string k, float v) { _kv.Add((k, w => { w.Write(6u); w.Write(v); })); return this; }
        public Gguf String(string k, string v) { _kv.Add((k, w => { w.Write(8u); Str(w, v); })); return this; }
        public Gguf Strings(string k, string[] v)
        {
            _kv.Add((k, w => { w.Write(9u); w.Write(8u); w.Write((ulong)v.Length); foreach (var s in v) Str(w, s); }));
            return this;
        }
        public Gguf Floats(string k, float[] v)
        {
            _kv.Add((k, w => { w.Write(9u); w.Write(6u); w.Write((ulong)v.Length); foreach (var s in v) w.Write(s); }));
            return this;
        }
        public Gguf Ints(string k, int[] v)
        {
            _kv.Add((k, w => { w.Write(9u); w.Write(5u); w.Write((ulong)v.Length); foreach (var s in v) w.Write(s); }));
            return this;
        }

        /// <summary>Adds a PyTorch-shaped tensor: ne is the reversed shape.</summary>
        public Gguf Tensor(string name, long[] shape, float[] data, bool q8 = false)
        {
            ulong[] ne = shape.Reverse().Select(d => (ulong)d).ToArray();
            _tensors.Add((name, ne, q8 ? 8u : 0u, q8 ? QuantizeQ8_0(data) : MemoryMarshal.AsBytes(data.AsSpan()).ToArray()));
            return this;
        }

        public void Write(string path)
        {
            const int align = 32;
            using var w = new BinaryWriter(System.IO.File.Create(path));
            w.Write(Magic);
            w.Write(3u);
            w.Write((ulong)_tensors.Count);
            w.Write((ulong)_kv.Count);
            foreach (var (k, write) in _kv) { Str(w, k); write(w); }
            ulong off = 0;
            for (int i = 0; i < _tensors.Count; i++)
            {
                var t = _tensors[i];
                Str(w, t.Name);
                w.Write((uint)t.Ne.Length);
                foreach (var d in t.Ne) w.Write(d);
                w.Write(t.Type);
                w.Write(OffsetOverride?.Invoke(i, off) ?? off);
                off += (ulong)t.Data.Length;
                off += (align - off % align) % align;
            }
            while (w.BaseStream.Position % align != 0) w.Write((byte)0);
            foreach (var t in _tensors)
            {
                w.Write(t.Data);
                while (w.BaseStream.Position % align != 0) w.Write((byte)0);
            }
        }

        private static byte[] QuantizeQ8_0(float[] x)
        {
            var o = new byte[x.Length / 32 * 34];
            for (int b = 0; b < x.Length / 32; b++)
            {
                float amax = 0;
                for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(x[b * 32 + j]));
                float d = amax / 127f;
                BitConverter.TryWriteBytes(o.AsSpan(b * 34), (Half)d);
                for (int j = 0; j < 32; j++)
                    o[b * 34 + 2 + j] = (byte)(sbyte)(d == 0 ? 0 : MathF.Round(x[b * 32 + j] / d, MidpointRounding.AwayFromZero));
            }
            return o;
        }
    }

    /// <summary>stories260K as a GGUF llama file (F32, or Q8_0 for the 7 linear kinds when dims allow), vocabulary embedded.</summary>
    public static Gguf StoriesGguf(LlamaConfig c, LlamaWeights w, IReadOnlyList<(string Piece, float Score)> vocab, bool q8 = false)
    {
        var g = new Gguf()
            .String("general.architecture", "llama")
            .String("general.name", "stories260K")
            .U32("llama.context_length", (uint)c.MaxSeqLen)
            .U32("llama.embedding_length", (uint)c.Dim)
            .U32("llama.block_count", (uint)c.NLayers)
            .U32("llama.feed_forward_length", (uint)c.HiddenDim)
            .U32("llama.attention.head_count", (uint)c.NHeads)
            .U32("llama.attention.head_count_kv", (uint)c.NKvHeads)
            .U32("llama.rope.dimension_count", (uint)c.HeadDim)
            .F32("llama.attention.layer_norm_rms_epsilon", 1e-5f)
            .F32("llama.rope.freq_base", 10000f)
            .String("tokenizer.ggml.model", "llama")
            .Strings("tokenizer.ggml.tokens", vocab.Select(v => v.Piece.Replace(' ', '\u2581')).ToArray())
            .Floats("tokenizer.ggml.scores", vocab.Select(v => v.Score).ToArray())
            .Ints("tokenizer.ggml.token_type", Enumerable.Range(0, vocab.Count).Select(i => i is 1 or 2 ? 3 : i >= 3 && i < 259 ? 6 : 1).ToArray())
            .U32("tokenizer.ggml.bos_token_id", 1)
            .U32("tokenizer.ggml.eos_token_id", 2);
        g.Tensor("token_embd.weight", [c.VocabSize, c.Dim], w.TokenEmbedding);
        for (int l = 0; l < c.NLayers; l++)
        {
            var L = w.Layers[l];
            string p = $"blk.{l}.";
            g.Tensor(p + "attn_norm.weight", [c.Dim], L.AttnNorm)
             .Tensor(p + "attn_q.weight", [c.QDim, c.Dim], L.Wq, q8)
             .Tensor(p + "attn_k.weight", [c.KvDim, c.Dim], L.Wk, q8)
             .Tensor(p + "attn_v.weight", [c.KvDim, c.Dim], L.Wv, q8)
             .Tensor(p + "attn_output.weight", [c.Dim, c.QDim], L.Wo, q8)
             .Tensor(p + "ffn_norm.weight", [c.Dim], L.FfnNorm)
             .Tensor(p + "ffn_gate.weight", [c.HiddenDim, c.Dim], L.WGate)
             .Tensor(p + "ffn_up.weight", [c.HiddenDim, c.Dim], L.WUp)
             .Tensor(p + "ffn_down.weight", [c.Dim, c.HiddenDim], L.WDown);
        }
        g.Tensor("output_norm.weight", [c.Dim], w.FinalNorm);
        return g;
    }
}
