// Host-side trained adapter tensors in vkpeft's canonical naming, independent of file format. Savers and loaders
// (PEFT, GGUF LoRA, our own format) translate to and from these names.
namespace VkPeft.Peft.Methods;

/// <summary>A named float32 tensor, row-major.</summary>
public sealed record HostTensor(float[] Data, long[] Shape)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Canonical tensor names (layer i, target t ∈ q,k,v,o,gate,up,down):
/// <list type="bullet">
/// <item>LoRA: <c>layers.{i}.{t}.lora_a</c> [r, in], <c>layers.{i}.{t}.lora_b</c> [out, r].</item>
/// <item>QA-LoRA: <c>layers.{i}.{t}.lora_a</c> [r, in/g] (acts on group means), <c>layers.{i}.{t}.lora_b</c> [out, r].</item>
/// <item>Bottleneck: <c>layers.{i}.{site}.down</c> [b, dim], <c>.down_bias</c> [b], <c>.up</c> [dim, b], <c>.up_bias</c> [dim], site ∈ attn, mlp.</item>
/// </list>
/// Row order of q/k outputs follows the base model's own layout (interleaved pairs for llama2.c/GGUF, rotate-half for
/// Hugging Face); the PEFT writer converts to rotate-half rows.
/// </summary>
public sealed class AdapterWeights
{
    public AdapterWeights(AdapterConfig config) { Config = config; }

    public AdapterConfig Config { get; }
    public Dictionary<string, HostTensor> Tensors { get; } = new(StringComparer.Ordinal);

    public static string TargetName(TargetModule t) => t.ToString().ToLowerInvariant();
    public static string LoraA(int layer, TargetModule t) => $"layers.{layer}.{TargetName(t)}.lora_a";
    public static string LoraB(int layer, TargetModule t) => $"layers.{layer}.{TargetName(t)}.lora_b";
    public static string Bottleneck(int layer, string site, string part) => $"layers.{layer}.{site}.{part}";
}
