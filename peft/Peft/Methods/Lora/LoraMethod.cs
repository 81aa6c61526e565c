// LoRA as one method: y += s·B·A·x̃ after each targeted linear (s = alpha/r, or alpha/√r with rsLoRA; x̃ the dropped-out
// input). Its knobs (--rank, --alpha, --dropout, --rslora, --freeze-a for LoRA-FA), parameter spec (A kaiming-uniform, B zero, as PEFT), merge
// rule ΔW = s·B·A and scratch memory. QA-LoRA derives from it with the input pooled over groups.
using System.Text.Json;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods.QaLora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Planning;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;
using static VkPeft.Peft.Formats.JsonFields;

namespace VkPeft.Peft.Methods.Lora;

/// <summary>
/// LoRA's own configuration (DoRA's too; QA-LoRA's adds its group size): rank r, alpha, dropout on the branch input,
/// rsLoRA scaling and LoRA-FA's frozen A.
/// </summary>
public record LoraSettings : MethodSettings
{
    /// <summary>Rank r.</summary>
    public int Rank { get; init; } = 8;
    public float Alpha { get; init; } = 16;
    public float Dropout { get; init; }
    /// <summary>rsLoRA: scale by alpha/√r instead of alpha/r.</summary>
    public bool UseRsLora { get; init; }
    /// <summary>LoRA-FA: A stays at its initialization (no gradient, no optimizer state); only B trains.</summary>
    public bool FreezeA { get; init; }

    /// <summary>LoRA scaling s: alpha/r, or alpha/√r with rsLoRA.</summary>
    public float Scaling => UseRsLora ? Alpha / MathF.Sqrt(Rank) : Alpha / Rank;
}

public class LoraMethod : PeftMethod
{
    public override string Name => "lora";

    /// <summary>True for QA-LoRA: the branch input is the mean of each group of g inputs, so A is [r, in/g].</summary>
    public virtual bool GroupPooled => false;

    /// <summary>Columns of A for a target with <paramref name="inFeatures"/> inputs.</summary>
    public int ACols(AdapterConfig a, int inFeatures) => GroupPooled ? inFeatures / a.SettingsOf<QaLoraSettings>().GroupSize : inFeatures;

    public override MethodSettings? DefaultSettings(BaseQuant quant) => new LoraSettings();

    // ---------------------------------------------------------------- configuration

    public override void ValidateOptions(AdapterConfig a, BaseQuant quant)
    {
        var s = a.SettingsOf<LoraSettings>();
        if (s.Rank < 1) throw new FormatException($"{RankOption.Flag} must be ≥ 1, got {s.Rank}");
        if (!(s.Alpha > 0)) throw new FormatException($"{AlphaOption.Flag} must be positive, got {s.Alpha}");
        if (s.Dropout is < 0 or >= 1) throw new FormatException($"{DropoutOption.Flag} must be in [0, 1), got {s.Dropout}");
    }

    public override void ValidateConfig(AdapterConfig a, LlamaConfig baseConfig, string source)
    {
        int rank = a.SettingsOf<LoraSettings>().Rank;
        if (rank <= 0) throw new ModelFormatException(source, "r", $"rank must be positive, got {rank}");
        if (a.Targets.Length == 0) throw new ModelFormatException(source, "target_modules", "no target modules");
        if (a.Targets.Distinct().Count() != a.Targets.Length)
            throw new ModelFormatException(source, "target_modules", "a target is listed twice");
    }

    /// <summary>
    /// The flat fields existing adapter files use: r, lora_alpha, lora_dropout, use_rslora, group_size (QA-LoRA's group;
    /// for plain LoRA the base's block size, which older readers expect to find), freeze_a when set.
    /// </summary>
    public override void WriteConfig(Utf8JsonWriter w, AdapterConfig a)
    {
        var s = a.SettingsOf<LoraSettings>();
        w.WriteNumber("r", s.Rank);
        w.WriteNumber("lora_alpha", s.Alpha);
        w.WriteNumber("lora_dropout", s.Dropout);
        w.WriteBoolean("use_rslora", s.UseRsLora);
        w.WriteNumber("group_size", s is QaLoraSettings q ? q.GroupSize : a.BaseQuant.Blocksize);
        if (s.FreezeA) w.WriteBoolean("freeze_a", true);
    }

    public override AdapterConfig ReadConfig(string file, JsonElement root, AdapterConfig common) => common with
    {
        Settings = ReadSettings(file, root, GroupPooled
            ? new QaLoraSettings { GroupSize = Int(file, root, "group_size") ?? QaLoraSettings.DefaultGroupSize }
            : new LoraSettings()),
    };

    /// <summary>LoRA's fields of a vkpeft_adapter.json over <paramref name="s"/> (which carries QA-LoRA's group size when pooled).</summary>
    private static LoraSettings ReadSettings(string file, JsonElement root, LoraSettings s) => s with
    {
        Rank = Int(file, root, "r") ?? 8,
        Alpha = (float)(Dbl(root, "lora_alpha") ?? 16),
        Dropout = (float)(Dbl(root, "lora_dropout") ?? 0),
        UseRsLora = Bool(root, "use_rslora") ?? false,
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
        var s = a.SettingsOf<LoraSettings>();
        var list = new List<ParameterSpec>();
        for (int l = 0; l < c.NLayers; l++)
            foreach (var t in a.Targets)
            {
                var (outF, inF) = c.LinearShape(t);
                int cols = ACols(a, inF);
                list.Add(new ParameterSpec(AdapterWeights.LoraA(l, t), [s.Rank, cols], new ParameterInit.Uniform(1f / MathF.Sqrt(cols)), Frozen: s.FreezeA));
                list.Add(new ParameterSpec(AdapterWeights.LoraB(l, t), [outF, s.Rank], new ParameterInit.Zeros(), OutputRowsOf: t));
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
        var cfg = adapter.Config.SettingsOf<LoraSettings>();
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
        var pooling = adapter.Config.SettingsOf<QaLoraSettings>();
        int g = pooling.GroupSize;
        double sc = s * pooling.PoolingConstant;
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
        var settings = a.SettingsOf<LoraSettings>();
        long maxIn = a.Targets.Max(t => c.LinearShape(t).In);
        bool dropout = settings.Dropout > 0;
        long pooled = GroupPooled ? rows * (maxIn / a.SettingsOf<QaLoraSettings>().GroupSize) : 1;
        long inputSized = (dropout ? 1 : 0) + (dropout || GroupPooled ? 2 : 0);
        long unit = LoraRuntime.ScratchUnit(c, a);
        long Scratch(long n) => n <= 1 ? MemoryModel.F32(1) : MemoryModel.F32((n + unit - 1) / unit * unit);
        yield return new MethodMemoryTerm("LoRA scratch", MemoryCategory.Workspace, inputSized * Scratch(rows * maxIn) + (3 - inputSized) * MemoryModel.F32(1)
            + 2 * Scratch(rows * settings.Rank) + Scratch(pooled));
    }

    /// <summary>The planner's rank, dropout and LoRA-FA switch (<see cref="TrainSetup.Settings"/> wins when it is LoRA's); alpha = 2r.</summary>
    public override AdapterConfig ConfigFor(TrainSetup s) => base.ConfigFor(s) with
    {
        Settings = s.Settings as LoraSettings ?? PlannedSettings(s, new LoraSettings()),
    };

    /// <summary><paramref name="defaults"/> with the planner's knobs of <paramref name="s"/>.</summary>
    protected static LoraSettings PlannedSettings(TrainSetup s, LoraSettings defaults) =>
        defaults with { Rank = s.Rank, Alpha = 2f * s.Rank, Dropout = s.Dropout, FreezeA = s.FreezeA };

    public override TrainSetup SetupFor(TrainSetup s, AdapterConfig a)
    {
        var l = a.SettingsOf<LoraSettings>();
        return base.SetupFor(s, a) with { Rank = l.Rank, FreezeA = l.FreezeA, Dropout = l.Dropout };
    }

    // ---------------------------------------------------------------- command line

    public static readonly MethodOption RankOption =
        new("--rank", "LoRA rank r", "8", (a, v) => With(a, s => s with { Rank = MethodOption.Int(v) }));

    public static readonly MethodOption AlphaOption =
        new("--alpha", "LoRA alpha (scaling alpha/r)", "16", (a, v) => With(a, s => s with { Alpha = MethodOption.Float(v) }));

    public static readonly MethodOption DropoutOption =
        new("--dropout", "Dropout on the LoRA branch input", "0", (a, v) => With(a, s => s with { Dropout = MethodOption.Float(v) }));

    private static readonly MethodOption[] LoraOptions =
    [
        RankOption,
        AlphaOption,
        DropoutOption,
        new("--rslora", "Scale by alpha/√r (rsLoRA)", null, (a, v) => With(a, s => s with { UseRsLora = bool.Parse(v) })),
        new("--freeze-a", "LoRA-FA: keep A at its initialization and train only B (no A gradient or optimizer state)", null, (a, v) => With(a, s => s with { FreezeA = bool.Parse(v) })),
        new("--dora", "DoRA: LoRA plus a trained magnitude per output row (weight-decomposed LoRA)", null, (a, v) => !bool.Parse(v) ? a
            : a.Method is LoraMethod { GroupPooled: false } ? a with { Method = PeftMethods.Get("dora") }
            : throw new SettingException($"applies to {AdapterSettings.Method} lora, not {a.Method.CliName}")),
    ];

    /// <summary>LoRA-FA's switch freezes A (QA-LoRA and DoRA have it too).</summary>
    public override bool CanFreezeA => true;

    public override IReadOnlyList<MethodOption> Options => LoraOptions;

    /// <summary><paramref name="a"/> with its LoRA settings changed (a QA-LoRA record stays one).</summary>
    private static AdapterConfig With(AdapterConfig a, Func<LoraSettings, LoraSettings> change) => a with { Settings = change(a.SettingsOf<LoraSettings>()) };
}
