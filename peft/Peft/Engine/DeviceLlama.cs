// A Llama-family decoder held on the device: fp32 embedding, norms and classifier, and the seven linear weight kinds
// frozen in the chosen base format (NF4/FP4 ± double quant, INT4 groups, or fp32), quantized layer by layer on load.
using VkPeft.Peft.Models;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public sealed class DeviceLayer : IDisposable
{
    public required DeviceTensor AttnNorm { get; init; }   // [dim]
    public required DeviceTensor FfnNorm { get; init; }    // [dim]
    public required DeviceLinear Wq { get; init; }         // [n_heads*hd, dim]
    public required DeviceLinear Wk { get; init; }         // [n_kv*hd, dim]
    public required DeviceLinear Wv { get; init; }         // [n_kv*hd, dim]
    public required DeviceLinear Wo { get; init; }         // [dim, n_heads*hd]
    public required DeviceLinear Gate { get; init; }       // [hidden, dim]
    public required DeviceLinear Up { get; init; }         // [hidden, dim]
    public required DeviceLinear Down { get; init; }       // [dim, hidden]
    public DeviceTensor? Bq { get; init; }                 // [n_heads*hd] (Qwen2 attention bias)
    public DeviceTensor? Bk { get; init; }                 // [n_kv*hd]
    public DeviceTensor? Bv { get; init; }                 // [n_kv*hd]
    public DeviceTensor? Bo { get; init; }                 // [dim] (o_proj bias)
    public DeviceTensor? BGate { get; init; }              // [hidden] (mlp_bias)
    public DeviceTensor? BUp { get; init; }                // [hidden]
    public DeviceTensor? BDown { get; init; }              // [dim]

    public IEnumerable<DeviceLinear> Linears => [Wq, Wk, Wv, Wo, Gate, Up, Down];

    public DeviceLinear Linear(Methods.TargetModule t) => t switch
    {
        Methods.TargetModule.Q => Wq,
        Methods.TargetModule.K => Wk,
        Methods.TargetModule.V => Wv,
        Methods.TargetModule.O => Wo,
        Methods.TargetModule.Gate => Gate,
        Methods.TargetModule.Up => Up,
        _ => Down,
    };

    public void Dispose()
    {
        AttnNorm.Dispose(); FfnNorm.Dispose();
        foreach (var l in Linears) l.Dispose();
        Bq?.Dispose(); Bk?.Dispose(); Bv?.Dispose(); Bo?.Dispose(); BGate?.Dispose(); BUp?.Dispose(); BDown?.Dispose();
    }
}

public sealed class DeviceLlama : IDisposable
{
    private DeviceLlama(VulkanContext ctx, LlamaConfig config, BaseQuant quant, BaseQuant embeddingQuant, DeviceLinear embedding,
        DeviceLinear classifier, DeviceTensor finalNorm, DeviceTensor invFreq, DeviceLayer[] layers)
    {
        Context = ctx; Config = config; Quant = quant; EmbeddingQuant = embeddingQuant; Embedding = embedding; Classifier = classifier;
        FinalNorm = finalNorm; InvFreq = invFreq; Layers = layers;
    }

    public VulkanContext Context { get; }
    public LlamaConfig Config { get; }
    public BaseQuant Quant { get; }
    /// <summary>How the token embedding and classifier are held: fp32 (none) or a 4-bit format (--quantize-embeddings).</summary>
    public BaseQuant EmbeddingQuant { get; }
    public DeviceLinear Embedding { get; }           // [vocab, dim], read by row (token lookup)
    public DeviceLinear Classifier { get; }          // [vocab, dim]; the embedding itself when tied
    /// <summary>Device bytes of the embedding and (untied) classifier.</summary>
    public long EmbeddingBytes => Embedding.DeviceBytes + (ReferenceEquals(Classifier, Embedding) ? 0 : Classifier.DeviceBytes);

    /// <summary>output[t, :] = embedding row ids[t] (dequantized inside the kernel when the table is quantized).</summary>
    public void EmbedTokens(DeviceTensor ids, DeviceTensor output)
    {
        if (Embedding.Quantized is { } q) QuantizedMatMul.Embed(q, ids, output);
        else VkPeft.Runtime.Kernels.Embedding.Forward(Embedding.Full!, ids, output);
    }
    public DeviceTensor FinalNorm { get; }           // [dim]
    public DeviceTensor InvFreq { get; }             // [head_dim/2] RoPE inverse frequencies (scaling applied)
    public DeviceLayer[] Layers { get; }
    public RopePairing Pairing => Config.RopeLayout == RopeLayout.RotateHalf ? RopePairing.RotateHalf : RopePairing.Interleaved;

    /// <summary>Device bytes of the frozen linear weights (the part quantization shrinks).</summary>
    public long LinearBytes => Layers.Sum(l => l.Linears.Sum(x => x.DeviceBytes));
    public long LinearParams => Layers.Sum(l => l.Linears.Sum(x => (long)x.OutFeatures * x.InFeatures));

    /// <summary>Uploads the weights <paramref name="w"/>, quantizing the linear weights layer by layer; reports progress per layer.</summary>
    public static DeviceLlama Load(VulkanContext ctx, LlamaConfig c, LlamaWeights w, BaseQuant quant, Action<int, int>? progress = null,
        BaseQuant? embeddingQuant = null)
    {
        var eq = embeddingQuant ?? BaseQuant.None;
        if (eq.IsInt4) throw new FormatException("embeddings can be held as nf4, nf4-dq, fp4 or fp4-dq (not int4)");
        using var scope = new TensorScope();
        DeviceTensor F32(string name, float[] data, params long[] shape)
        {
            var t = DeviceTensor.Create(ctx, name, DType.F32, shape, MemoryCategory.Weights);
            scope.Add(t);
            t.Upload<float>(data);
            return t;
        }
        DeviceLinear Table(string name, float[] data)
        {
            var l = DeviceLinear.Create(ctx, name, data, c.VocabSize, c.Dim, eq);
            scope.Add(l);
            return l;
        }
        var emb = Table("embedding", w.TokenEmbedding);
        var cls = w.Classifier == null ? emb : Table("classifier", w.Classifier);
        var norm = F32("final_norm", w.FinalNorm, c.Dim);
        var inv = ReferenceForward.RopeInverseFrequencies(c, w.RopeFreqFactors).Select(d => (float)d).ToArray();
        var invT = F32("rope_inv_freq", inv, inv.Length);
        var layers = new DeviceLayer[c.NLayers];
        for (int i = 0; i < c.NLayers; i++)
        {
            var lw = w.Layers[i];
            DeviceLinear Lin(string n, float[] data, int o, int iF)
            {
                var l = DeviceLinear.Create(ctx, $"layers.{i}.{n}", data, o, iF, quant);
                scope.Add(l);
                return l;
            }
            layers[i] = new DeviceLayer
            {
                AttnNorm = F32($"layers.{i}.attn_norm", lw.AttnNorm, c.Dim),
                FfnNorm = F32($"layers.{i}.ffn_norm", lw.FfnNorm, c.Dim),
                Wq = Lin("q", lw.Wq, c.QDim, c.Dim),
                Wk = Lin("k", lw.Wk, c.KvDim, c.Dim),
                Wv = Lin("v", lw.Wv, c.KvDim, c.Dim),
                Wo = Lin("o", lw.Wo, c.Dim, c.QDim),
                Gate = Lin("gate", lw.WGate, c.HiddenDim, c.Dim),
                Up = Lin("up", lw.WUp, c.HiddenDim, c.Dim),
                Down = Lin("down", lw.WDown, c.Dim, c.HiddenDim),
                Bq = lw.Bq == null ? null : F32($"layers.{i}.bq", lw.Bq, c.QDim),
                Bk = lw.Bk == null ? null : F32($"layers.{i}.bk", lw.Bk, c.KvDim),
                Bv = lw.Bv == null ? null : F32($"layers.{i}.bv", lw.Bv, c.KvDim),
                Bo = lw.Bo == null ? null : F32($"layers.{i}.bo", lw.Bo, c.Dim),
                BGate = lw.BGate == null ? null : F32($"layers.{i}.b_gate", lw.BGate, c.HiddenDim),
                BUp = lw.BUp == null ? null : F32($"layers.{i}.b_up", lw.BUp, c.HiddenDim),
                BDown = lw.BDown == null ? null : F32($"layers.{i}.b_down", lw.BDown, c.Dim),
            };
            progress?.Invoke(i + 1, c.NLayers);
        }
        ctx.Sync();
        scope.Keep();   // the model owns them now
        return new DeviceLlama(ctx, c, quant, eq, emb, cls, norm, invT, layers);
    }

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        Embedding.Dispose();
        if (!ReferenceEquals(Classifier, Embedding)) Classifier.Dispose();
        FinalNorm.Dispose();
        InvFreq.Dispose();
    }
}
