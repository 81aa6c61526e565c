// LoRA as one method: y += s·B·A·x̃ after each targeted linear (s = alpha/r, or alpha/√r with rsLoRA; x̃ the dropped-out
// input). Its knobs (--rank, --alpha, --dropout, --rslora, --freeze-a for LoRA-FA), parameter spec (A kaiming-uniform, B zero, as PEFT), merge
// rule ΔW = s·B·A and scratch memory. QA-LoRA derives from it with the input pooled over groups.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Lora;

public class LoraMethod : PeftMethod
{
    public override string Name => "lora";

    /// <summary>True for QA-LoRA: the branch input is the mean of each group of g inputs, so A is [r, in/g].</summary>
    public virtual bool GroupPooled => false;

    /// <summary>Columns of A for a target with <paramref name="inFeatures"/> inputs.</summary>
    public int ACols(AdapterConfig a, int inFeatures) => GroupPooled ? inFeatures / a.GroupSize : inFeatures;

    // ---------------------------------------------------------------- configuration

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        if (a.Rank < 1) throw new FormatException($"--rank must be ≥ 1, got {a.Rank}");
        if (!(a.Alpha > 0)) throw new FormatException($"--alpha must be positive, got {a.Alpha}");
        if (a.Dropout is < 0 or >= 1) throw new FormatException($"--dropout must be in [0, 1), got {a.Dropout}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        if (a.Rank <= 0) throw new ModelFormatException(source, "r", $"rank must be positive, got {a.Rank}");
        if (a.Targets.Length == 0) throw new ModelFormatException(source, "target_modules", "no target modules");
        if (a.Targets.Distinct().Count() != a.Targets.Length)
            throw new ModelFormatException(source, "target_modules", "a target is listed twice");
    }

    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        w.WriteNumber("r", a.Rank);
        w.WriteNumber("lora_alpha", a.Alpha);
        w.WriteNumber("lora_dropout", a.Dropout);
        w.WriteBoolean("use_rslora", a.UseRsLora);
        w.WriteNumber("group_size", a.GroupSize);
        if (a.FreezeA) w.WriteBoolean("freeze_a", true);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common) => common with
    {
        Rank = Int(file, root, "r") ?? 8,
        Alpha = (float)(Dbl(root, "lora_alpha") ?? 16),
        Dropout = (float)(Dbl(root, "lora_dropout") ?? 0),
        UseRsLora = Bool(root, "use_rslora") ?? false,
        GroupSize = Int(file, root, "group_size") ?? 32,
        FreezeA = Bool(root, "freeze_a") ?? false,
    };

    public override string? PeftUnsupportedReason => null;

    public override string? GgufLoraUnsupportedReason => null;

    // ---------------------------------------------------------------- parameters

    /// <summary>
    /// Per layer and target: A [r, in] (QA-LoRA [r, in/g]) ~ U(−1/√cols, 1/√cols) (kaiming-uniform, a=√5), frozen with
    /// --freeze-a (LoRA-FA); B [out, r] = 0.
    /// </summary>
    public override IReadOnlyList<ParameterSpec> Parameters(LlamaConfig c, AdapterConfig a)
    {
        var list = new List<ParameterSpec>();
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in a.Targets)
            {
                var (outF, inF) = c.LinearShape(t);
                int cols = ACols(a, inF);
                list.Add(new ParameterSpec(AdapterWeights.LoraA(l, t), [a.Rank, cols], new ParameterInit.Uniform(1f / MathF.Sqrt(cols)), Frozen: a.FreezeA));
                list.Add(new ParameterSpec(AdapterWeights.LoraB(l, t), [outF, a.Rank], new ParameterInit.Zeros(), OutputRowsOf: t));
            }
        return list;
    }

    public override ITrainableAdapter CreateRuntime(VulkanContext ctx, LlamaConfig c, AdapterConfig a, TrainableParameters p, int maxRows) =>
        new LoraRuntime(ctx, c, a, p, maxRows);

    // ---------------------------------------------------------------- merge

    /// <summary>ΔW [out, in] in float64: <c>s·B·A</c> (QA-LoRA: <c>s·c·(B·A)[o, i/g]</c>, c = 1/g); rows in the base layout, like B.</summary>
    public override double[]? MergeDelta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t, ReadOnlySpan<float> baseWeight) =>
        adapter.Config.Targets.Contains(t) ? Delta(adapter, c, layer, t) : null;

    /// <summary>ΔW of one target (see <see cref="MergeDelta"/>); it does not depend on the base weight.</summary>
    public double[] Delta(AdapterWeights adapter, LlamaConfig c, int layer, TargetModule t)
    {
        var cfg = adapter.Config;
        var (outF, inF) = c.LinearShape(t);
        var a = adapter.Tensors[AdapterWeights.LoraA(layer, t)];
        var b = adapter.Tensors[AdapterWeights.LoraB(layer, t)];
        int r = cfg.Rank, aCols = (int)a.Shape[1];
        double s = cfg.Scaling;
        var ba = new double[(long)outF * aCols];
        for (int o = 0; o < outF; o++)
            for (int k = 0; k < r; k++)
            {
                double bv = b.Data[o * r + k];
                if (bv == 0) continue;
                int aRow = k * aCols, dst = o * aCols;
                for (int j = 0; j < aCols; j++) ba[dst + j] += bv * a.Data[aRow + j];
            }
        if (!GroupPooled)
        {
            for (int i = 0; i < ba.Length; i++) ba[i] *= s;
            return ba;
        }
        int g = cfg.GroupSize;
        double sc = s * cfg.PoolingConstant;
        var delta = new double[(long)outF * inF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++) delta[o * inF + i] = sc * ba[o * aCols + i / g];
        return delta;
    }

    /// <summary>LoRA is its own plain form.</summary>
    public override AdapterWeights? AsPlainLora(AdapterWeights adapter, LlamaConfig c, ICollection<string>? notes) => adapter;

    // ---------------------------------------------------------------- memory model

    /// <summary>
    /// LoraRuntime's scratch: t, dt at rows × r; with dropout x_dropped at rows × max in_features; with dropout or
    /// pooling d_src and dx at rows × max in_features; x_pooled for QA-LoRA; stored in rows of lcm(rank, input widths)
    /// elements (placeholders of one element stay).
    /// </summary>
    public override IEnumerable<MethodMemoryTerm> WorkspaceTerms(TrainSetup s, long rows)
    {
        var c = s.Config;
        var a = ConfigFor(s);
        long maxIn = a.Targets.Max(t => c.LinearShape(t).In);
        bool dropout = a.Dropout > 0;
        long pooled = GroupPooled ? rows * (maxIn / a.GroupSize) : 1;
        long inputSized = (dropout ? 1 : 0) + (dropout || GroupPooled ? 2 : 0);
        long unit = LoraRuntime.ScratchUnit(c, a);
        long Scratch(long n) => n <= 1 ? MemoryModel.F32(1) : MemoryModel.F32((n + unit - 1) / unit * unit);
        yield return new MethodMemoryTerm("LoRA scratch", MemoryCategory.Workspace, inputSized * Scratch(rows * maxIn) + (3 - inputSized) * MemoryModel.F32(1)
            + 2 * Scratch(rows * a.Rank) + Scratch(pooled));
    }

    // ---------------------------------------------------------------- command line

    private static readonly MethodOption[] LoraOptions =
    [
        new("--rank", "LoRA rank r", "8", (a, v) => a with { Rank = MethodOption.Int("--rank", v) }),
        new("--alpha", "LoRA alpha (scaling alpha/r)", "16", (a, v) => a with { Alpha = MethodOption.Float("--alpha", v) }),
        new("--dropout", "Dropout on the LoRA branch input", "0", (a, v) => a with { Dropout = MethodOption.Float("--dropout", v) }),
        new("--rslora", "Scale by alpha/√r (rsLoRA)", null, (a, v) => a with { UseRsLora = bool.Parse(v) }),
        new("--freeze-a", "LoRA-FA: keep A at its initialization and train only B (no A gradient or optimizer state)", null, (a, v) => a with { FreezeA = bool.Parse(v) }),
        new("--dora", "DoRA: LoRA plus a trained magnitude per output row (weight-decomposed LoRA)", null, (a, v) => !bool.Parse(v) ? a
            : a.Method is LoraMethod { GroupPooled: false } ? a with { Method = PeftMethods.Get("dora") }
            : throw new FormatException($"--dora applies to --method lora, not {a.Method.CliName}")),
    ];

    public override IReadOnlyList<MethodOption> Options => LoraOptions;
}
