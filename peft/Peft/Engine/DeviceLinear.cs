// A frozen base linear weight [out, in] on the device — quantized (decoded inside the kernels) or fp32 — with the
// forward y = x·Wᵀ and the input gradient dx = dy·W. No gradient of the weight itself is ever formed.
using VkPeft.Quant;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Quant;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Engine;

public sealed class DeviceLinear : IDisposable
{
    private DeviceLinear(string name, int outF, int inF, DeviceQuantizedWeight? q, DeviceTensor? f)
    {
        Name = name; OutFeatures = outF; InFeatures = inF; Quantized = q; Full = f;
    }

    public string Name { get; }
    public int OutFeatures { get; }
    public int InFeatures { get; }
    public DeviceQuantizedWeight? Quantized { get; private set; }
    public DeviceTensor? Full { get; private set; }   // [out, in] fp32 when not quantized
    public long DeviceBytes => Quantized?.DeviceBytes ?? Full!.Bytes;

    /// <summary>Uploads a host weight, quantizing it on the device (NF4/FP4) or on the host (INT4 groups) as asked.</summary>
    public static DeviceLinear Create(VulkanContext ctx, string name, float[] weight, int outF, int inF, BaseQuant quant)
    {
        if (!quant.IsQuantized)
        {
            using var scope = new TensorScope();   // a failed upload frees the tensor
            var t = scope.Add(DeviceTensor.Create(ctx, name, DType.F32, [outF, inF], MemoryCategory.Weights));
            t.Upload<float>(weight);
            scope.Keep();
            return new DeviceLinear(name, outF, inF, null, t);
        }
        if (quant.IsInt4)
        {
            var q = QuantizedLinearWeight.Int4Group(weight, outF, inF, quant.Blocksize, name);
            return new DeviceLinear(name, outF, inF, DeviceQuantizedWeight.Upload(ctx, name, q), null);
        }
        using var staging = DeviceTensor.Create(ctx, name + ".f32", DType.F32, [outF, inF], MemoryCategory.Workspace);
        staging.Upload<float>(weight);
        var dq = DeviceQuantizer.Quantize4Bit(staging, quant.FourBitType, quant.Blocksize, quant.DoubleQuant, name);
        return new DeviceLinear(name, outF, inF, dq, null);
    }

    /// <summary>
    /// Replaces the weight with <paramref name="weight"/> [out, in], quantized as <paramref name="quant"/> asks exactly as
    /// <see cref="Create"/> does (a ReLoRA restart re-quantizing a merged base); the new weight is built before the old is freed.
    /// </summary>
    public void ReplaceWeight(float[] weight, BaseQuant quant)
    {
        var ctx = Quantized?.Context ?? Full!.Context;
        var fresh = Create(ctx, Name, weight, OutFeatures, InFeatures, quant);
        Quantized?.Dispose();
        Full?.Dispose();
        (Quantized, Full) = (fresh.Quantized, fresh.Full);
    }

    /// <summary>y = alpha·x·Wᵀ + beta·y.</summary>
    public void Forward(DeviceTensor x, DeviceTensor y, float alpha = 1, float beta = 0)
    {
        if (Quantized != null) QuantizedMatMul.Forward(x, Quantized, y, alpha, beta);
        else MatMul.Run(x, Full!, y, transposeB: true, alpha, beta);
    }

    /// <summary>dx = alpha·dy·W + beta·dx (the gradient with respect to the layer input).</summary>
    public void InputGrad(DeviceTensor dy, DeviceTensor dx, float alpha = 1, float beta = 0)
    {
        if (Quantized != null) QuantizedMatMul.InputGrad(dy, Quantized, dx, alpha, beta);
        else MatMul.Run(dy, Full!, dx, transposeB: false, alpha, beta);
    }

    /// <summary>The weight as the kernels see it, dequantized to the host (for merges and exports).</summary>
    public float[] DownloadDequantized()
    {
        if (Full != null) return Full.ToArray<float>();
        var q = Quantized!;
        using var t = DeviceTensor.Create(q.Context, Name + ".deq", DType.F32, [OutFeatures, InFeatures], MemoryCategory.Workspace);
        QuantizedMatMul.Dequantize(q, t);
        return t.ToArray<float>();
    }

    public void Dispose()
    {
        Quantized?.Dispose();
        Full?.Dispose();
    }
}
