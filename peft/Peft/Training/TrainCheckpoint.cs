// Checkpoint files of a training run, isolated from the training loop. Each checkpoint is one complete folder,
// --out/checkpoints/step-NNNNNNN (adapter, optimizer moments, trainer state and a SHA-256 manifest), built in a
// staging folder whose files are flushed to disk, then renamed into place with the parent folder made durable: a
// crash at any point leaves either the previous checkpoints or the new one, never a mix. --resume takes the newest
// checkpoint whose manifest verifies and falls back to an older kept one (--keep-checkpoints) when the newest is
// corrupt. The adapter, optimizer and state files at the top of --out are the latest checkpoint's copies (what
// `generate --adapter` and `export` read), each replaced atomically.
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using VkPeft.Peft.Export;
using VkPeft.Peft.Formats;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>What a checkpoint holds once read and verified.</summary>
public sealed record LoadedCheckpoint(string Folder, int Step, AdapterWeights Adapter, IReadOnlyDictionary<string, (float[] M, float[] V)> Moments,
    IReadOnlyList<(int Step, double Loss)> TrainCurve, IReadOnlyList<(int Step, double Loss)> EvalCurve, IReadOnlyList<string> Csv);

public static class TrainCheckpoint
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string ManifestFile = "checkpoint.sha256";
    public const string CheckpointsFolder = "checkpoints";
    public const int DefaultKeep = 2;

    /// <summary>The folder of the checkpoint at <paramref name="step"/> under <paramref name="outDir"/>.</summary>
    public static string FolderOf(string outDir, int step) =>
        Path.Combine(outDir, CheckpointsFolder, "step-" + step.ToString("D7", CultureInfo.InvariantCulture));

    /// <summary>
    /// Writes a checkpoint durably: the folder for <paramref name="step"/>, then the top-level copies, then prunes
    /// all but the newest <paramref name="keep"/> checkpoint folders. <paramref name="extraTensorFiles"/> (file name →
    /// tensors) are further safetensors files of the folder, covered by its manifest (ReLoRA's finished cycles).
    /// </summary>
    public static void Save(string outDir, int step, AdapterWeights adapter, LlamaConfig config,
        IEnumerable<SafeTensorsWriter.Entry> optimizerEntries, JsonObject state, int keep,
        IReadOnlyDictionary<string, IEnumerable<SafeTensorsWriter.Entry>>? extraTensorFiles = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(optimizerEntries);
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "at least the newest checkpoint is kept");
        string root = Path.Combine(outDir, CheckpointsFolder);
        Directory.CreateDirectory(root);
        // Leftovers of a run killed mid-write: staging folders and temporary files are never final, so they go.
        foreach (var d in Directory.GetDirectories(root, ".staging-*").Concat(Directory.GetDirectories(root, ".deleting-*")))
            Directory.Delete(d, recursive: true);
        foreach (var f in Directory.GetFiles(outDir, "*.tmp-*")) File.Delete(f);
        string final = FolderOf(outDir, step);
        string staging = Path.Combine(root, ".staging-" + Guid.NewGuid().ToString("N"));
        try
        {
            AdapterIO.SaveVkPeft(staging, adapter, config, force: true);
            FaultInjection.BeforeWrite(OptimizerFile);
            SafeTensorsWriter.Write(Path.Combine(staging, OptimizerFile), optimizerEntries);
            foreach (var (file, entries) in extraTensorFiles ?? new Dictionary<string, IEnumerable<SafeTensorsWriter.Entry>>())
                SafeTensorsWriter.Write(Path.Combine(staging, file), entries);
            state["step"] = step;
            FaultInjection.BeforeWrite(StateFile);
            File.WriteAllText(Path.Combine(staging, StateFile), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            var manifest = new StringBuilder();
            foreach (var f in Directory.GetFiles(staging).OrderBy(f => f, StringComparer.Ordinal))
            {
                DurableFile.Flush(f);
                manifest.Append(CultureInfo.InvariantCulture, $"{Sha256(f)}  {Path.GetFileName(f)}\n");
            }
            DurableFile.WriteAllText(Path.Combine(staging, ManifestFile), manifest.ToString());
            DurableFile.SyncDirectory(staging);
            if (Directory.Exists(final)) Discard(root, final);   // a re-save of the same step
            Directory.Move(staging, final);
            DurableFile.SyncDirectory(root);
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
        // Top-level copies, each replaced atomically; the state last so it never names a step newer than its files.
        foreach (string name in Directory.GetFiles(final).Select(f => Path.GetFileName(f)).OrderBy(n => n == StateFile ? 1 : 0))
        {
            if (name == ManifestFile) continue;
            byte[] bytes = File.ReadAllBytes(Path.Combine(final, name));
            DurableFile.WriteAllBytes(Path.Combine(outDir, name), bytes);
        }
        foreach (var old in Steps(outDir).Skip(keep)) Discard(root, FolderOf(outDir, old));
        DurableFile.SyncDirectory(outDir);
    }

    /// <summary>
    /// Removes a checkpoint folder without ever leaving a partial one under its name: it is renamed away (atomic)
    /// before its files are deleted; a crash in between leaves a .deleting- folder the next save removes.
    /// </summary>
    private static void Discard(string root, string folder)
    {
        string doomed = Path.Combine(root, ".deleting-" + Guid.NewGuid().ToString("N"));
        Directory.Move(folder, doomed);
        DurableFile.SyncDirectory(root);
        Directory.Delete(doomed, recursive: true);
    }

    /// <summary>Steps of the complete checkpoint folders under <paramref name="outDir"/>, newest first.</summary>
    public static List<int> Steps(string outDir)
    {
        string root = Path.Combine(outDir, CheckpointsFolder);
        if (!Directory.Exists(root)) return [];
        var steps = new List<int>();
        foreach (var d in Directory.GetDirectories(root))
        {
            string name = Path.GetFileName(d);
            if (name.StartsWith("step-", StringComparison.Ordinal) && int.TryParse(name.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int s))
                steps.Add(s);
        }
        steps.Sort((a, b) => b.CompareTo(a));
        return steps;
    }

    /// <summary>The step of the newest checkpoint in <paramref name="outDir"/> (0 when there is none).</summary>
    public static int LatestStep(string outDir)
    {
        var steps = Steps(outDir);
        if (steps.Count > 0) return steps[0];
        string legacy = Path.Combine(outDir, StateFile);
        if (!File.Exists(legacy)) return 0;
        try
        {
            using var doc = JsonFields.ParseFile(legacy);
            return doc.RootElement.ValueKind == JsonValueKind.Object && JsonFields.Int(legacy, doc.RootElement, "step") is { } s ? s : 0;
        }
        catch (ModelFormatException)
        {
            return 0;
        }
    }

    /// <summary>
    /// Reads the newest intact checkpoint of <paramref name="outDir"/>: a corrupt one is reported through
    /// <paramref name="warn"/> and the next older kept one is tried; none intact is an error naming the newest's fault.
    /// A run from before checkpoint folders existed is read from the top-level files. Optimizer moments are read for
    /// <paramref name="trainedNames"/> (default: every parameter; frozen tensors have none).
    /// </summary>
    public static LoadedCheckpoint Load(string outDir, LlamaConfig config, IReadOnlyCollection<string> parameterNames, Action<string>? warn = null,
        IReadOnlyCollection<string>? trainedNames = null)
    {
        var steps = Steps(outDir);
        if (steps.Count == 0)
        {
            if (!File.Exists(Path.Combine(outDir, StateFile)))
                throw new SettingException($"{TrainSettings.Resume}: no checkpoint in {outDir} ({CheckpointsFolder}/ and {StateFile} missing)");
            return Read(outDir, config, parameterNames, trainedNames ?? parameterNames, verify: false);
        }
        ModelFormatException? first = null;
        foreach (int step in steps)
        {
            string folder = FolderOf(outDir, step);
            try
            {
                var loaded = Read(folder, config, parameterNames, trainedNames ?? parameterNames, verify: true);
                if (loaded.Step != step) throw new ModelFormatException(Path.Combine(folder, StateFile), "step", $"says step {loaded.Step}, the folder step {step}");
                if (first is not null) warn?.Invoke($"warning: {first.Message}; resuming from the older intact checkpoint at step {step}");
                return loaded;
            }
            catch (ModelFormatException e)
            {
                first ??= e;
            }
        }
        throw new ModelFormatException(first!.File, first.Field,
            first.Detail + (steps.Count > 1 ? $" (and no older kept checkpoint is intact: {steps.Count} tried)" : " (no older checkpoint is kept; see --keep-checkpoints)"));
    }

    private static LoadedCheckpoint Read(string folder, LlamaConfig config, IReadOnlyCollection<string> parameterNames, IReadOnlyCollection<string> trainedNames, bool verify)
    {
        if (verify) VerifyManifest(folder);
        string statePath = Path.Combine(folder, StateFile);
        if (!File.Exists(statePath)) throw new ModelFormatException(statePath, StateFile, "checkpoint state is missing");
        int step;
        List<(int, double)> trainCurve, evalCurve;
        var csv = new List<string>();
        using (var doc = JsonFields.ParseFile(statePath))
        {
            var r = doc.RootElement;
            if (r.ValueKind != JsonValueKind.Object) throw new ModelFormatException(statePath, "json", "corrupt checkpoint state: not a JSON object");
            step = JsonFields.Int(statePath, r, "step") ?? throw new ModelFormatException(statePath, "step", "missing");
            if (step < 0) throw new ModelFormatException(statePath, "step", $"must be ≥ 0, got {step}");
            trainCurve = Curve(statePath, r, "train_curve");
            evalCurve = Curve(statePath, r, "eval_curve");
            if (r.TryGetProperty("csv", out var lines))
            {
                if (lines.ValueKind != JsonValueKind.Array) throw new ModelFormatException(statePath, "csv", "must be an array of strings");
                int i = 0;
                foreach (var line in lines.EnumerateArray()) csv.Add(JsonFields.RequireString(statePath, $"csv[{i++}]", line));
            }
        }
        var adapter = AdapterIO.Load(folder, config);
        foreach (var (name, _) in adapter.Tensors)
            if (!parameterNames.Contains(name)) throw new ModelFormatException(folder, name, "tensor not part of this adapter configuration");
        string optPath = Path.Combine(folder, OptimizerFile);
        var moments = new Dictionary<string, (float[], float[])>();
        using (var opt = SafeTensorsFile.Open(optPath))
            foreach (var name in trainedNames)
                moments[name] = (opt.ReadFloat32(name + ".m"), opt.ReadFloat32(name + ".v"));
        return new LoadedCheckpoint(folder, step, adapter, moments, trainCurve, evalCurve, csv);
    }

    /// <summary>A [[step, loss], ...] array of the state file.</summary>
    private static List<(int, double)> Curve(string file, JsonElement state, string field)
    {
        var list = new List<(int, double)>();
        if (!state.TryGetProperty(field, out var rows)) return list;
        if (rows.ValueKind != JsonValueKind.Array) throw new ModelFormatException(file, field, "must be an array of [step, loss] pairs");
        int i = 0;
        foreach (var row in rows.EnumerateArray())
        {
            string at = $"{field}[{i++}]";
            if (row.ValueKind != JsonValueKind.Array || row.GetArrayLength() != 2) throw new ModelFormatException(file, at, "must be a [step, loss] pair");
            list.Add((JsonFields.RequireInt(file, at, row[0]), JsonFields.RequireNumber(file, at, row[1])));
        }
        return list;
    }

    /// <summary>Checks every file the manifest lists against its SHA-256 (the manifest itself must parse).</summary>
    public static void VerifyManifest(string folder)
    {
        string path = Path.Combine(folder, ManifestFile);
        if (!File.Exists(path)) throw new ModelFormatException(path, ManifestFile, "checkpoint manifest is missing (an interrupted write?)");
        var lines = File.ReadAllLines(path).Where(l => l.Length > 0).ToList();
        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in lines)
        {
            int sep = line.IndexOf("  ", StringComparison.Ordinal);
            if (sep != 64) throw new ModelFormatException(path, "line", $"not '<sha256>  <file>': {JsonFields.Shorten(line)}");
            string name = line[(sep + 2)..];
            if (name.Contains('/') || name.Contains('\\') || name.Contains("..", StringComparison.Ordinal))
                throw new ModelFormatException(path, name, "the manifest may list only files of its own folder");
            string file = Path.Combine(folder, name);
            if (!File.Exists(file)) throw new ModelFormatException(file, name, "file listed in the checkpoint manifest is missing");
            if (!string.Equals(Sha256(file), line[..64], StringComparison.OrdinalIgnoreCase))
                throw new ModelFormatException(file, name, "checksum mismatch: the checkpoint is corrupt");
            listed.Add(name);
        }
        foreach (string required in new[] { StateFile, OptimizerFile, AdapterIO.WeightsFile })
            if (!listed.Contains(required)) throw new ModelFormatException(path, required, "the checkpoint manifest does not list this file");
    }

    private static string Sha256(string file)
    {
        using var fs = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }
}
