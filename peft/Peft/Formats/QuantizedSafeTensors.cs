// Quantized linear weights inside HF safetensors folders: the bitsandbytes 4-bit serialization (Linear4bit
// _save_to_state_dict keys, QuantState JSON in bnb's key order) and vkpeft's INT4 group form; writers and readers.
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using VkPeft.Quant;

namespace VkPeft.Peft.Formats;

public static class QuantizedSafeTensors
{
    /// <summary>config.json quantization_config.quant_method of the INT4 group form.</summary>
    public const string Int4QuantMethod = "vkpeft_int4";

    /// <summary>
    /// The bitsandbytes tensors of one 4-bit Linear weight <paramref name="weightName"/> (…proj.weight), formats.md §1:
    /// <c>weight</c> U8 [(n+1)/2, 1]; <c>weight.absmax</c> U8 [nblk] (double quant) or F32 [nblk];
    /// <c>weight.quant_map</c> F32 [16]; with double quant <c>weight.nested_absmax</c> F32 and
    /// <c>weight.nested_quant_map</c> F32 [256]; <c>weight.quant_state.bitsandbytes__nf4</c> U8 = UTF-8 of
    /// json.dumps({quant_type, blocksize, dtype, shape[, nested_blocksize, nested_dtype, nested_offset]}).
    /// </summary>
    public static List<SafeTensorsWriter.Entry> Bnb4BitEntries(string weightName, QuantizedLinearWeight q, string dtypeName)
    {
        ArgumentNullException.ThrowIfNull(q);
        if (q.Format is not (WeightFormat.Nf4 or WeightFormat.Fp4)) throw new ArgumentException("not a bitsandbytes 4-bit weight", nameof(q));
        string type = q.Format == WeightFormat.Nf4 ? "nf4" : "fp4";
        var list = new List<SafeTensorsWriter.Entry>
        {
            new(weightName, "U8", [q.Data.LongLength, 1], q.Data),
        };
        if (q.QuantizedAbsmax is { } dq)
        {
            list.Add(new(weightName + ".absmax", "U8", [dq.Codes.LongLength], dq.Codes));
            list.Add(SafeTensorsWriter.FromFloat32(weightName + ".quant_map", [16], FourBitCodebooks.Values(q.Format == WeightFormat.Nf4 ? QuantType.Nf4 : QuantType.Fp4)));
            list.Add(SafeTensorsWriter.FromFloat32(weightName + ".nested_absmax", [dq.NestedAbsmax.LongLength], dq.NestedAbsmax));
            list.Add(SafeTensorsWriter.FromFloat32(weightName + ".nested_quant_map", [256], DynamicMap.Signed));
        }
        else
        {
            list.Add(SafeTensorsWriter.FromFloat32(weightName + ".absmax", [q.Absmax!.LongLength], q.Absmax));
            list.Add(SafeTensorsWriter.FromFloat32(weightName + ".quant_map", [16], FourBitCodebooks.Values(q.Format == WeightFormat.Nf4 ? QuantType.Nf4 : QuantType.Fp4)));
        }
        byte[] json = Encoding.UTF8.GetBytes(QuantStateJson(type, q.Blocksize, dtypeName, q.OutFeatures, q.InFeatures, q.QuantizedAbsmax?.Offset));
        list.Add(new(weightName + ".quant_state.bitsandbytes__" + type, "U8", [json.LongLength], json));
        return list;
    }

    /// <summary>bnb's packed QuantState JSON: Python json.dumps with its default separators and key order.</summary>
    public static string QuantStateJson(string quantType, int blocksize, string dtypeName, int outF, int inF, float? nestedOffset)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append(inv, $"{{\"quant_type\": \"{quantType}\", \"blocksize\": {blocksize}, \"dtype\": \"{dtypeName}\", \"shape\": [{outF}, {inF}]");
        if (nestedOffset is { } off)
            sb.Append(inv, $", \"nested_blocksize\": {DoubleQuant.NestedBlocksize}, \"nested_dtype\": \"float32\", \"nested_offset\": {PythonFloat(off)}");
        return sb.Append('}').ToString();
    }

    /// <summary>Python's repr of a double (shortest round-trip digits; fixed notation for 1e-4 ≤ |v| &lt; 1e16, else d.ddde±XX).</summary>
    public static string PythonFloat(double v)
    {
        if (double.IsNaN(v)) return "NaN";
        if (double.IsInfinity(v)) return v > 0 ? "Infinity" : "-Infinity";
        string sign = v < 0 || (v == 0 && double.IsNegative(v)) ? "-" : "";
        string r = Math.Abs(v).ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E', StringComparison.Ordinal);
        string mantissa = e < 0 ? r : r[..e];
        int exp = e < 0 ? 0 : int.Parse(r[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        int dot = mantissa.IndexOf('.', StringComparison.Ordinal);
        string digits = mantissa.Replace(".", "", StringComparison.Ordinal);
        int point = (dot < 0 ? mantissa.Length : dot) + exp;   // decimal point position within digits
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') lead++;
        digits = digits[lead..];
        point -= lead;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) return sign + "0.0";
        int exp10 = point - 1;
        if (exp10 >= -4 && exp10 < 16)
        {
            if (point <= 0) return sign + "0." + new string('0', -point) + digits;
            if (point >= digits.Length) return sign + digits + new string('0', point - digits.Length) + ".0";
            return sign + digits[..point] + "." + digits[point..];
        }
        string m = digits.Length > 1 ? digits[0] + "." + digits[1..] : digits;
        return sign + m + "e" + (exp10 < 0 ? "-" : "+") + Math.Abs(exp10).ToString("00", CultureInfo.InvariantCulture);
    }

    /// <summary>The INT4 group form of one linear weight: <c>weight</c> U8 packed codes [(n+1)/2], <c>weight.scales</c> and <c>weight.mins</c> F32 [out, groups].</summary>
    public static List<SafeTensorsWriter.Entry> Int4Entries(string weightName, Int4GroupQuantized q)
    {
        ArgumentNullException.ThrowIfNull(q);
        return
        [
            new(weightName, "U8", [q.Packed.LongLength], q.Packed),
            SafeTensorsWriter.FromFloat32(weightName + ".scales", [q.OutFeatures, q.GroupsPerRow], q.Scales),
            SafeTensorsWriter.FromFloat32(weightName + ".mins", [q.OutFeatures, q.GroupsPerRow], q.Mins),
        ];
    }

    /// <summary>The bnb quant-state key of <paramref name="weightName"/> in <paramref name="set"/>, or null when the weight is not 4-bit.</summary>
    public static string? Bnb4BitStateKey(SafeTensorsSet set, string weightName)
    {
        ArgumentNullException.ThrowIfNull(set);
        foreach (var t in new[] { "nf4", "fp4" })
            if (set.Contains(weightName + ".quant_state.bitsandbytes__" + t)) return weightName + ".quant_state.bitsandbytes__" + t;
        return null;
    }

    /// <summary>Reads a bitsandbytes 4-bit weight back to float32 with the file's own quant_map/nested_quant_map.</summary>
    public static float[] ReadBnb4Bit(SafeTensorsSet set, string weightName, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(shape);
        string stateKey = Bnb4BitStateKey(set, weightName) ?? throw new ModelFormatException(set.Source, weightName, "no bitsandbytes quant_state");
        var stateFile = set.FileOf(stateKey);
        string file = stateFile.Path;
        using var doc = JsonFields.Parse(file, stateKey, stateFile.GetBytes(stateKey));
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object) throw new ModelFormatException(file, stateKey, "quant_state must be a JSON object");
        int blocksize = r.TryGetProperty("blocksize", out var bsEl) && bsEl.ValueKind == JsonValueKind.Number && bsEl.TryGetInt32(out int bs) && bs > 0 ? bs
            : throw new ModelFormatException(file, stateKey + ".blocksize", "missing or not a positive integer");
        if (!r.TryGetProperty("shape", out var shEl) || shEl.ValueKind != JsonValueKind.Array
            || !shEl.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long d) ? d : -1).SequenceEqual(shape.Select(d => (long)d)))
            throw new ModelFormatException(file, stateKey + ".shape", $"quant_state shape does not match config.json, which implies [{string.Join(", ", shape)}]");
        long count = shape.Aggregate(1L, (a, b) => a * b);
        // The packed codes in the file bound the count before any block arithmetic or allocation relies on it.
        var packedInfo = set.Info(weightName);
        if (packedInfo.DType != "U8" || packedInfo.ElementCount != (count + 1) / 2)
            throw new ModelFormatException(set.FileOf(weightName).Path, weightName, $"expected U8 with {(count + 1) / 2} packed bytes, found {packedInfo.DType} [{string.Join(", ", packedInfo.Shape)}]");
        if (count > Array.MaxLength)
            throw new ModelFormatException(set.FileOf(weightName).Path, weightName, $"{count} weights is too many for one tensor");
        int nblk = Bnb4BitCodec.BlockCount((int)count, blocksize);
        float[] quantMap = ReadF32(set, weightName + ".quant_map", 16);
        float[] absmax;
        var absInfo = set.Info(weightName + ".absmax");
        if (absInfo.ElementCount != nblk)
            throw new ModelFormatException(set.FileOf(weightName + ".absmax").Path, weightName + ".absmax", $"has {absInfo.ElementCount} values, {nblk} blocks expected");
        if (absInfo.DType == "U8")
        {
            if (!r.TryGetProperty("nested_offset", out var offEl) || offEl.ValueKind != JsonValueKind.Number)
                throw new ModelFormatException(file, stateKey + ".nested_offset", "double-quantized absmax without nested_offset");
            float offset = (float)offEl.GetDouble();
            byte[] codes = set.FileOf(weightName + ".absmax").GetBytes(weightName + ".absmax").ToArray();
            float[] nested = ReadF32(set, weightName + ".nested_absmax", (nblk + DoubleQuant.NestedBlocksize - 1) / DoubleQuant.NestedBlocksize);
            float[] nestedMap = ReadF32(set, weightName + ".nested_quant_map", 256);
            absmax = new float[nblk];
            DoubleQuant.Dequantize(new DoubleQuantized(codes, nested, offset), nestedMap, absmax);   // the file's own map
        }
        else absmax = ReadF32(set, weightName + ".absmax", nblk);

        var packed = set.FileOf(weightName).GetBytes(weightName);
        var result = new float[count];
        for (long j = 0; j < count; j++)
            result[j] = quantMap[Nibbles.Get(packed, j)] * absmax[j / blocksize];
        return result;
    }

    /// <summary>True when <paramref name="weightName"/> is stored in the INT4 group form.</summary>
    public static bool IsInt4(SafeTensorsSet set, string weightName) =>
        set.Contains(weightName + ".scales") && set.Contains(weightName + ".mins");

    /// <summary>Reads an INT4 group weight: codes, scales, mins (group size from config.json quantization_config).</summary>
    public static Int4GroupQuantized ReadInt4(SafeTensorsSet set, string weightName, int[] shape, int groupSize)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(shape);
        int outF = shape[0], inF = shape[1], groups = (inF + groupSize - 1) / groupSize;
        long count = (long)outF * inF;
        var info = set.Info(weightName);
        if (info.DType != "U8" || info.ElementCount != (count + 1) / 2)
            throw new ModelFormatException(set.FileOf(weightName).Path, weightName, $"expected U8 with {(count + 1) / 2} packed INT4 codes, found {info.DType} [{string.Join(", ", info.Shape)}]");
        float[] scales = ReadF32(set, weightName + ".scales", outF * groups);
        float[] mins = ReadF32(set, weightName + ".mins", outF * groups);
        return new Int4GroupQuantized(outF, inF, groupSize, set.FileOf(weightName).GetBytes(weightName).ToArray(), scales, mins);
    }

    /// <summary>group_size of an INT4 folder's config.json quantization_config, or null when it is not the INT4 form.</summary>
    public static int? Int4GroupSize(string configPath)
    {
        using var doc = JsonFields.ParseFile(configPath);
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("quantization_config", out var qc) || qc.ValueKind != JsonValueKind.Object) return null;
        if (JsonFields.Str(qc, "quant_method") != Int4QuantMethod) return null;
        if (!qc.TryGetProperty("group_size", out var g) || g.ValueKind != JsonValueKind.Number || !g.TryGetInt32(out int gs) || gs <= 0)
            throw new ModelFormatException(configPath, "quantization_config.group_size", "missing or not a positive integer");
        return gs;
    }

    private static float[] ReadF32(SafeTensorsSet set, string name, long expected)
    {
        var info = set.Info(name);
        if (info.DType != "F32" || info.ElementCount != expected)
            throw new ModelFormatException(set.FileOf(name).Path, name, $"expected F32 with {expected} values, found {info.DType} [{string.Join(", ", info.Shape)}]");
        return MemoryMarshal.Cast<byte, float>(set.FileOf(name).GetBytes(name)).ToArray();
    }
}
