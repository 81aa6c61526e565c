// Quantizes an fp32 weight already on the device to NF4/FP4 (± double quantization) bit-exactly like quant/: block
// absmax and the 4-bit codes on the device; only the small per-block statistics visit the host (1/absmax is computed
// there so it is correctly rounded on every GPU, and double quantization of the absmax runs through quant/DoubleQuant).
using System.Runtime.InteropServices;
using VkPeft.Quant;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Tensors;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Quant;

public static class DeviceQuantizer
{
    [StructLayout(LayoutKind.Sequential)]
    private struct BlockPush { public uint Blocks, GroupsX, XOffset, BlockOffset, BlockSize, Count; }

    /// <summary>
    /// Quantizes <paramref name="weight"/> [out, in] (fp32, may be split into segments when in_features is a multiple of
    /// the block size) into a new device weight. The fp32 tensor is left untouched; the caller frees it.
    /// </summary>
    public static DeviceQuantizedWeight Quantize4Bit(DeviceTensor weight, QuantType type, int blocksize, bool doubleQuant, string name)
    {
        BasicOps.RequireF32(weight);
        if (weight.Shape.Length != 2) throw new ArgumentException($"'{weight.Name}': a linear weight must be [out, in], got {weight.ShapeString}");
        if (blocksize < 32 || blocksize > 4096 || (blocksize & (blocksize - 1)) != 0)
            throw new ArgumentException($"'{name}': blocksize {blocksize} is not one of 32, 64, …, 4096");
        var ctx = weight.Context;
        int outF = (int)weight.Shape[0], inF = (int)weight.Shape[1];
        long n = weight.Count;
        int nblk = (int)((n + blocksize - 1) / blocksize);
        // Pieces in whole blocks: the segment boundaries (whole rows) must fall on block boundaries.
        if (weight.Segments.Count > 1 && inF % blocksize != 0)
            throw new ArgumentException($"'{name}': a split weight needs in_features ({inF}) to be a multiple of the block size {blocksize}");

        using var absmax = DeviceTensor.Create(ctx, name + ".absmax_f32", DType.F32, [nblk], MemoryCategory.Workspace);
        var absPipeline = ctx.Pipelines.Get(ShaderId.AbsmaxBlocks, BasicOps.WorkgroupSize);
        foreach (var (start, count, range, offset) in BlockPieces(weight, blocksize))
        {
            uint blocks = (uint)((count + blocksize - 1) / blocksize);
            var (gx, gy) = Pieces.Grid(BasicOps.Groups(blocks), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(absPipeline, [Binding.Read(range), Binding.Write(absmax.Range)],
                new BlockPush { Blocks = blocks, GroupsX = gx, XOffset = offset, BlockOffset = (uint)(start / blocksize), BlockSize = (uint)blocksize, Count = (uint)count },
                gx, gy, 1, "absmax_blocks");
        }
        var host = absmax.ToArray<float>();
        for (int b = 0; b < host.Length; b++)
            if (!float.IsFinite(host[b]))
                throw new ArgumentException($"tensor '{name}': NaN or infinite value in block {b} (elements {(long)b * blocksize}..{Math.Min(n, (long)(b + 1) * blocksize) - 1})");
        var inv = new float[nblk];
        for (int b = 0; b < nblk; b++) inv[b] = host[b] == 0f ? 0f : 1f / host[b];
        using var invT = DeviceTensor.Create(ctx, name + ".inv_absmax", DType.F32, [nblk], MemoryCategory.Workspace);
        invT.Upload<float>(inv);

        long codeBytes = (n + 1) / 2;
        if ((ulong)((codeBytes + 3) / 4 * 4) > ctx.Caps.MaxBindingBytes)
            throw new VulkanUnsupportedException(new SettingMessage(
                $"'{name}' [{outF}, {inF}]: its {ByteSize.Format((ulong)codeBytes)} of 4-bit codes exceed this device's largest storage binding ({ByteSize.Format(ctx.Caps.MaxBindingBytes)}); hold it unquantized (for an embedding: {RuntimeSettings.QuantEmbeddings} none) or use a device with larger bindings"));
        using var scope = new TensorScope();   // a failure frees the codes and scales made so far
        var codes = scope.Add(DeviceTensor.Create(ctx, name + ".codes", DType.U8, [(codeBytes + 3) / 4 * 4], MemoryCategory.Weights));
        ctx.Commands.Fill(codes.Range, 0);
        var qPipeline = ctx.Pipelines.Get(type == QuantType.Nf4 ? ShaderId.QuantizeNf4 : ShaderId.QuantizeFp4, BasicOps.WorkgroupSize);
        foreach (var (start, count, range, offset) in BlockPieces(weight, blocksize))
        {
            uint blocks = (uint)((count + blocksize - 1) / blocksize);
            var (gx, gy) = Pieces.Grid(BasicOps.Groups(blocks), ctx.Caps.MaxComputeWorkGroupCount[0]);
            ctx.Commands.Dispatch(qPipeline, [Binding.Read(range), Binding.Read(invT.Range), Binding.Write(codes.Range)],
                new BlockPush { Blocks = blocks, GroupsX = gx, XOffset = offset, BlockOffset = (uint)(start / blocksize), BlockSize = (uint)blocksize, Count = (uint)count },
                gx, gy, 1, "quantize_4bit");
        }
        ctx.Sync();
        var format = type == QuantType.Nf4 ? WeightFormat.Nf4 : WeightFormat.Fp4;
        DeviceQuantizedWeight result;
        if (!doubleQuant)
        {
            var absmaxT = scope.Add(DeviceQuantizedWeight.UploadFloats(ctx, name + ".absmax", host));
            result = new DeviceQuantizedWeight(ctx, name, format, outF, inF, blocksize, codes, absmaxT, null, 0f);
        }
        else
        {
            var dq = DoubleQuant.Quantize(host, name + ".absmax");
            var scale = scope.Add(DeviceQuantizedWeight.Upload(ctx, name + ".absmax_codes", dq.Codes));
            var aux = scope.Add(DeviceQuantizedWeight.UploadFloats(ctx, name + ".nested_absmax", dq.NestedAbsmax));
            result = new DeviceQuantizedWeight(ctx, name, format, outF, inF, blocksize, codes, scale, aux, dq.Offset);
        }
        scope.Keep();   // the weight owns them now
        return result;
    }

    /// <summary>Whole-block pieces of the flattened weight: (first element, element count, binding, element offset in it).</summary>
    private static IEnumerable<(long Start, long Count, BufferRange Range, uint Offset)> BlockPieces(DeviceTensor weight, int blocksize)
    {
        foreach (var s in weight.Segments)
        {
            long start = s.FirstRow * weight.RowElements, count = s.Rows * weight.RowElements;
            var (range, offset) = Pieces.RangeOf(weight, start, count);
            yield return (start, count, range, offset);
        }
    }
}
