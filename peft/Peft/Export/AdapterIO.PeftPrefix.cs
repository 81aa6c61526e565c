// HF PEFT prefix-tuning folders: adapter_config.json with peft_type "PREFIX_TUNING" and PrefixTuningConfig's fields as
// save_pretrained writes them after PEFT's grouped-query rewrite (token_dim = head_dim·kv_heads, num_attention_heads =
// kv_heads), and prompt_embeddings [n, num_layers·2·token_dim]: the flat index ((2ℓ + kv)·H + h)·d + j of a row holds
// layer ℓ's key (kv = 0) or value (kv = 1) of head h, keys in rotate-half order within each head as Hugging Face caches
// them. A folder trained with prefix_projection holds the computed prefix too, so it loads the same way; vkpeft saves a
// projection-trained adapter the same way, the MLP's output computed here in float64 and rounded once.
using System.Text.Json;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Prefix;
using VkPeft.Peft.Models;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Export;

public static partial class AdapterIO
{
    /// <summary>Each [kv_dim] key of <paramref name="keys"/> [n, kv_dim] with its heads' pairs moved between RoPE layouts.</summary>
    private static float[] PrefixKeyColumns(float[] keys, LlamaConfig c, RopeLayout from, RopeLayout to)
    {
        if (from == to || ModelTensors.PermutedHeads(c, TargetModule.K) is not { } heads) return keys;
        var result = new float[keys.Length];
        for (int r = 0; r < keys.Length / c.KvDim; r++)
            QkPermutation.PermuteRows<float>(keys.AsSpan(r * c.KvDim, c.KvDim), heads, c.HeadDim, 1, from, to).CopyTo(result, r * c.KvDim);
        return result;
    }

    /// <summary>
    /// Layer <paramref name="layer"/>'s keys and values [n, kv_dim] of a prefix adapter: its stored tensors, or with the
    /// projection the MLP's output tanh(E·W1ᵀ + b1)·W2ᵀ + b2 for the layer's row blocks of W2 and b2 (float64, rounded once).
    /// </summary>
    public static (float[] Keys, float[] Values) PrefixKeysAndValues(AdapterWeights adapter, LlamaConfig c, int layer)
    {
        var s = PrefixMethod.Settings(adapter.Config);
        if (!s.Projection) return (adapter.Tensors[PrefixMethod.KeysName(layer)].Data, adapter.Tensors[PrefixMethod.ValuesName(layer)].Data);
        int n = s.VirtualTokens, t = c.KvDim, hidden = s.Hidden(c);
        var e = adapter.Tensors[PrefixMethod.EmbeddingName].Data;    // [n, t]
        var w1 = adapter.Tensors[PrefixMethod.HiddenWeightName].Data; // [hidden, t]
        var b1 = adapter.Tensors[PrefixMethod.HiddenBiasName].Data;   // [hidden]
        var w2 = adapter.Tensors[PrefixMethod.OutputWeightName].Data; // [2L·t, hidden]
        var b2 = adapter.Tensors[PrefixMethod.OutputBiasName].Data;   // [2L, t]
        var h = new double[n * hidden];                                // [n, hidden]
        for (int r = 0; r < n; r++)
            for (int j = 0; j < hidden; j++)
            {
                double z = b1[j];
                for (int i = 0; i < t; i++) z += (double)e[r * t + i] * w1[j * t + i];
                h[r * hidden + j] = Math.Tanh(z);
            }
        float[] Block(int block)
        {
            var y = new float[n * t];   // [n, t]
            for (int r = 0; r < n; r++)
                for (int o = 0; o < t; o++)
                {
                    long row = ((long)block * t + o) * hidden;
                    double acc = b2[block * t + o];
                    for (int j = 0; j < hidden; j++) acc += h[r * hidden + j] * w2[row + j];
                    y[r * t + o] = (float)acc;
                }
            return y;
        }
        return (Block(2 * layer), Block(2 * layer + 1));
    }

    private static ExportReport SavePeftPrefix(string dir, AdapterWeights adapter, LlamaConfig c, bool force, string dtype)
    {
        AdapterMerge.Validate(adapter, c, "adapter");
        int n = PrefixMethod.Settings(adapter.Config).VirtualTokens, width = 2 * c.NLayers * c.KvDim;
        var packed = new float[(long)n * width];   // [n, num_layers·2·kv_dim]
        for (int l = 0; l < c.NLayers; l++)
        {
            var (rawKeys, values) = PrefixKeysAndValues(adapter, c, l);
            var keys = PrefixKeyColumns(rawKeys, c, c.RopeLayout, RopeLayout.RotateHalf);
            for (int t = 0; t < n; t++)
            {
                Array.Copy(keys, t * c.KvDim, packed, (long)t * width + 2 * l * c.KvDim, c.KvDim);
                Array.Copy(values, t * c.KvDim, packed, (long)t * width + (2 * l + 1) * c.KvDim, c.KvDim);
            }
        }
        var entries = new List<SafeTensorsWriter.Entry> { SafeTensorsWriter.FromFloat32("prompt_embeddings", [n, width], packed, dtype) };
        return WritePeftFolder(dir, force, dtype, PeftPrefixConfigJson(adapter.Config, c), entries, PeftMetadata(adapter.Config, c));
    }

    /// <summary>PrefixTuningConfig's fields only, sorted as <c>save_pretrained</c> writes them (GQA values rewritten).</summary>
    private static byte[] PeftPrefixConfigJson(AdapterConfig cfg, LlamaConfig c)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteNull("auto_mapping");
            w.WriteString("base_model_name_or_path", PeftBaseModelName(cfg.BaseModel));
            var s = PrefixMethod.Settings(cfg);
            w.WriteNumber("encoder_hidden_size", s.Projection ? s.Hidden(c) : c.KvDim);
            w.WriteBoolean("inference_mode", true);
            w.WriteNull("init_weights");
            w.WriteNull("modules_to_save");
            w.WriteNumber("num_attention_heads", c.NKvHeads);
            w.WriteNumber("num_layers", c.NLayers);
            w.WriteNumber("num_transformer_submodules", 1);
            w.WriteNumber("num_virtual_tokens", PrefixMethod.Settings(cfg).VirtualTokens);
            w.WriteString("peft_type", "PREFIX_TUNING");
            w.WriteBoolean("prefix_projection", s.Projection);
            w.WriteNull("revision");
            w.WriteString("task_type", "CAUSAL_LM");
            w.WriteNumber("token_dim", c.KvDim);
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    private static AdapterWeights LoadPeftPrefix(string dir, string cfgPath, JsonElement r, LlamaConfig c)
    {
        string gqa = c.NKvHeads != c.NHeads ? " (PEFT rewrites it to the key/value width for grouped-query models)" : "";
        RequireModelField(cfgPath, r, "token_dim", c.KvDim, "key/value width" + gqa);
        RequireModelField(cfgPath, r, "num_attention_heads", c.NKvHeads, "key/value heads" + gqa);
        RequireModelField(cfgPath, r, "num_layers", c.NLayers, "layers");
        RequireModelField(cfgPath, r, "num_transformer_submodules", 1, "transformer submodules (a causal LM)");
        int n = Int(cfgPath, r, "num_virtual_tokens") ?? throw new ModelFormatException(cfgPath, "num_virtual_tokens", "required field is missing");
        var method = PeftMethods.Get("prefix");
        string wPath = WeightsPath(dir);
        using var file = SafeTensorsFile.Open(wPath);
        var config = new AdapterConfig
        {
            Method = method, Targets = [], BaseQuant = ReadPeftBaseQuant(cfgPath, r, file),
            BaseModel = Str(r, "base_model_name_or_path") ?? "", Settings = new PrefixSettings(n),
        };
        method.ValidateConfig(config, c, cfgPath);
        int width = 2 * c.NLayers * c.KvDim;
        var packed = ReadShaped(file, "prompt_embeddings", [n, width]);
        foreach (var name in file.Tensors.Keys)
            if (name != "prompt_embeddings")
                throw new ModelFormatException(wPath, name, "unexpected tensor (a prefix-tuning adapter holds only prompt_embeddings)");
        var adapter = new AdapterWeights(config);
        for (int l = 0; l < c.NLayers; l++)
        {
            var keys = new float[n * c.KvDim];
            var values = new float[n * c.KvDim];
            for (int t = 0; t < n; t++)
            {
                Array.Copy(packed, (long)t * width + 2 * l * c.KvDim, keys, t * c.KvDim, c.KvDim);
                Array.Copy(packed, (long)t * width + (2 * l + 1) * c.KvDim, values, t * c.KvDim, c.KvDim);
            }
            adapter.Tensors[PrefixMethod.KeysName(l)] = new HostTensor(PrefixKeyColumns(keys, c, RopeLayout.RotateHalf, c.RopeLayout), [n, c.KvDim]);
            adapter.Tensors[PrefixMethod.ValuesName(l)] = new HostTensor(values, [n, c.KvDim]);
        }
        AdapterMerge.Validate(adapter, c, wPath);
        return adapter;
    }
}
