// MSBuild task (compiled by RoslynCodeTaskFactory): turns the variants listed in shaders.list into SPIR-V with glslc,
// rebuilding only variants whose sources or includes changed, and writes the ShaderId catalog the runtime uses.
// shaders.list holds plain lines (one variant each) and product lines whose id names axes in braces: an axis
// ('@axis <name> <EnumType> <value>=<-Ddefine>[,<-Ddefine>...] ...') expands the line once per value, appending that
// value's defines. The catalog carries, per variant, its family (the id with the '_{axis}' parts removed) and a typed
// ShaderKey (family + one enum value per axis the line names), so the runtime finds variants by key, not by string.
// Variants whose source is listed in '@validate' are also checked with spirv-val (extensions glslc compiles but the
// lavapipe device cannot run: the build is their only check besides the device self-check).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public sealed class CompileShaderVariants : Microsoft.Build.Utilities.Task
{
    [Required] public string ListFile { get; set; } = "";
    [Required] public string SourceDir { get; set; } = "";
    [Required] public string OutputDir { get; set; } = "";
    [Required] public string CatalogFile { get; set; } = "";
    [Required] public string Glslc { get; set; } = "";
    public string SpirvVal { get; set; } = "spirv-val";
    [Output] public ITaskItem[] Compiled { get; set; } = Array.Empty<ITaskItem>();

    private sealed class Variant
    {
        public Variant(string name, string source, string[] defines, int line, string family, List<KeyValuePair<Axis, string>> axes)
        { Name = name; Source = source; Defines = defines; Line = line; Family = family; Axes = axes; }
        public string Name { get; }
        public string Source { get; }
        public string[] Defines { get; }
        public int Line { get; }
        public string Family { get; }
        public List<KeyValuePair<Axis, string>> Axes { get; }
    }

    private sealed class Axis
    {
        public Axis(string name, string enumType) { Name = name; EnumType = enumType; }
        public string Name { get; }
        public string EnumType { get; }
        public List<KeyValuePair<string, string[]>> Values { get; } = new List<KeyValuePair<string, string[]>>();
    }

    // The key property of an axis enum: its type name without a leading "Shader" (ShaderFormat -> Format).
    private static string KeyProperty(string enumType) =>
        enumType.StartsWith("Shader", StringComparison.Ordinal) && enumType.Length > 6 ? enumType.Substring(6) : enumType;

    private bool Fail(int line, string message)
    {
        Log.LogError(null, null, null, ListFile, line, 0, 0, 0, message);
        return false;
    }

    private bool Parse(List<Variant> variants, HashSet<string> validate)
    {
        var axes = new Dictionary<string, Axis>();
        var lines = File.ReadAllLines(ListFile);
        for (int i = 0; i < lines.Length; i++)
        {
            var text = lines[i];
            int hash = text.IndexOf('#');
            if (hash >= 0) text = text.Substring(0, hash);
            var parts = text.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) continue;
            if (parts[0] == "@axis")
            {
                if (parts.Length < 4) return Fail(i + 1, "expected '@axis <name> <EnumType> <value>=<-Ddefine>[,...] ...'");
                if (axes.ContainsKey(parts[1])) return Fail(i + 1, "duplicate axis '" + parts[1] + "'");
                var axis = new Axis(parts[1], parts[2]);
                foreach (var v in parts.Skip(3))
                {
                    int eq = v.IndexOf('=');
                    if (eq <= 0) return Fail(i + 1, "axis value '" + v + "' should be <value>=<-Ddefine>[,<-Ddefine>...] (empty after '=' for none)");
                    var defs = v.Substring(eq + 1).Split(new[] { ',' }, StringSplitOptions.RemoveEmptyEntries);
                    if (defs.Any(d => !d.StartsWith("-D", StringComparison.Ordinal))) return Fail(i + 1, "axis value '" + v + "': only -D defines are allowed");
                    axis.Values.Add(new KeyValuePair<string, string[]>(v.Substring(0, eq), defs));
                }
                axes[axis.Name] = axis;
                continue;
            }
            if (parts[0] == "@validate")
            {
                foreach (var src in parts.Skip(1)) validate.Add(src);
                continue;
            }
            if (parts.Length < 2) return Fail(i + 1, "expected '<id> <source.comp> [-DNAME[=VALUE] ...]'");
            var defines = parts.Skip(2).ToArray();
            if (defines.Any(d => !d.StartsWith("-D", StringComparison.Ordinal))) return Fail(i + 1, "only -D defines are allowed after the source");

            // Axes named in the id, in order; the family is the id without them.
            var named = new List<Axis>();
            var pattern = parts[0];
            int pos = 0;
            while ((pos = pattern.IndexOf('{', pos)) >= 0)
            {
                int end = pattern.IndexOf('}', pos);
                if (end < 0) return Fail(i + 1, "unclosed '{' in '" + pattern + "'");
                var name = pattern.Substring(pos + 1, end - pos - 1);
                if (!axes.TryGetValue(name, out var axis)) return Fail(i + 1, "unknown axis '" + name + "' (declare it with @axis above)");
                if (named.Any(a => a.EnumType == axis.EnumType)) return Fail(i + 1, "two axes of type " + axis.EnumType + " in one line");
                named.Add(axis);
                pos = end + 1;
            }
            var family = pattern;
            foreach (var a in named) family = family.Replace("_{" + a.Name + "}", "").Replace("{" + a.Name + "}_", "").Replace("{" + a.Name + "}", "");

            // Cartesian product over the named axes.
            var combos = new List<List<KeyValuePair<Axis, KeyValuePair<string, string[]>>>> { new List<KeyValuePair<Axis, KeyValuePair<string, string[]>>>() };
            foreach (var a in named)
                combos = combos.SelectMany(c => a.Values.Select(v => new List<KeyValuePair<Axis, KeyValuePair<string, string[]>>>(c) { new KeyValuePair<Axis, KeyValuePair<string, string[]>>(a, v) })).ToList();
            foreach (var combo in combos)
            {
                var id = pattern;
                foreach (var kv in combo) id = id.Replace("{" + kv.Key.Name + "}", kv.Value.Key);
                if (variants.Any(v => v.Name == id)) return Fail(i + 1, "duplicate shader id '" + id + "'");
                var keyAxes = combo.Select(kv => new KeyValuePair<Axis, string>(kv.Key, kv.Value.Key)).ToList();
                if (variants.Any(v => v.Family == family && SameKey(v.Axes, keyAxes)))
                    return Fail(i + 1, "two variants of family '" + family + "' with the same key ('" + id + "')");
                variants.Add(new Variant(id, parts[1], defines.Concat(combo.SelectMany(kv => kv.Value.Value)).ToArray(), i + 1, family, keyAxes));
            }
        }
        return true;
    }

    private static bool SameKey(List<KeyValuePair<Axis, string>> a, List<KeyValuePair<Axis, string>> b) =>
        a.Count == b.Count && a.All(x => b.Any(y => y.Key.EnumType == x.Key.EnumType && y.Value == x.Value));

    public override bool Execute()
    {
        var variants = new List<Variant>();
        var validate = new HashSet<string>();
        if (!Parse(variants, validate)) return false;

        Directory.CreateDirectory(OutputDir);
        var includeDir = Path.Combine(SourceDir, "include");
        DateTime includesTime = File.GetLastWriteTimeUtc(ListFile);
        if (Directory.Exists(includeDir))
            foreach (var f in Directory.GetFiles(includeDir, "*.glsl"))
                if (File.GetLastWriteTimeUtc(f) > includesTime) includesTime = File.GetLastWriteTimeUtc(f);

        var errors = new System.Collections.Concurrent.ConcurrentBag<string>();
        var outputs = new string[variants.Count];
        System.Threading.Tasks.Parallel.For(0, variants.Count, new System.Threading.Tasks.ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, idx =>
        {
            var v = variants[idx];
            var src = Path.Combine(SourceDir, v.Source);
            var spv = Path.Combine(OutputDir, v.Name + ".spv");
            outputs[idx] = spv;
            if (!File.Exists(src)) { errors.Add(ListFile + "(" + v.Line + "): source not found: " + v.Source); return; }
            var inputTime = File.GetLastWriteTimeUtc(src);
            if (includesTime > inputTime) inputTime = includesTime;
            if (File.Exists(spv) && File.GetLastWriteTimeUtc(spv) >= inputTime) return;
            var args = new List<string> { "--target-env=vulkan1.2", "-O", "-Werror", "-fshader-stage=compute", "-I", includeDir };
            args.AddRange(v.Defines);
            args.Add("-o"); args.Add(spv + ".tmp"); args.Add(src);
            var failure = RunTool(Glslc, args, "Install shaderc's glslc: 'apt-get install glslc' (./vkpeft installs it for you when run as root).");
            if (failure == null && validate.Contains(v.Source))
                failure = RunTool(SpirvVal, new List<string> { "--target-env", "vulkan1.2", spv + ".tmp" },
                    "Install spirv-val: 'apt-get install spirv-tools' (./vkpeft installs it for you when run as root).");
            if (failure != null)
            {
                errors.Add("shader '" + v.Name + "' (" + v.Source + " " + string.Join(" ", v.Defines) + "): " + failure);
                try { File.Delete(spv + ".tmp"); } catch (IOException) { }
                return;
            }
            File.Copy(spv + ".tmp", spv, true);
            File.Delete(spv + ".tmp");
        });
        foreach (var e in errors) Log.LogError(e);
        if (errors.Count > 0) return false;

        var sb = new StringBuilder();
        sb.AppendLine("// <auto-generated> by shaders/build/CompileShaderVariants.cs from shaders/shaders.list. Do not edit. </auto-generated>");
        sb.AppendLine("namespace VkPeft.Runtime.Kernels;");
        sb.AppendLine();
        sb.AppendLine("/// <summary>Every compiled shader variant, one id per line of shaders/shaders.list.</summary>");
        sb.AppendLine("public enum ShaderId");
        sb.AppendLine("{");
        foreach (var v in variants) sb.AppendLine("    " + Pascal(v.Name) + ",");
        sb.AppendLine("}");
        sb.AppendLine();
        sb.AppendLine("/// <summary>Shader families: a plain line of shaders/shaders.list, or a product line with its axes removed.</summary>");
        sb.AppendLine("public enum ShaderFamily");
        sb.AppendLine("{");
        foreach (var f in variants.Select(v => v.Family).Distinct()) sb.AppendLine("    " + Pascal(f) + ",");
        sb.AppendLine("}");
        var enumTypes = variants.SelectMany(v => v.Axes.Select(a => a.Key.EnumType)).Distinct().ToList();
        foreach (var t in enumTypes)
        {
            sb.AppendLine();
            sb.AppendLine("/// <summary>Values of the shaders.list axes of type " + t + ".</summary>");
            sb.AppendLine("public enum " + t);
            sb.AppendLine("{");
            foreach (var value in variants.SelectMany(v => v.Axes).Where(a => a.Key.EnumType == t).Select(a => a.Value).Distinct())
                sb.AppendLine("    " + Pascal(value) + ",");
            sb.AppendLine("}");
        }
        sb.AppendLine();
        sb.AppendLine("/// <summary>Typed key of a variant: its family and, for product lines, one value per axis.</summary>");
        sb.AppendLine("public readonly record struct ShaderKey(ShaderFamily Family"
            + string.Concat(enumTypes.Select(t => ", " + t + "? " + KeyProperty(t) + " = null")) + ");");
        sb.AppendLine();
        sb.AppendLine("/// <summary>Where each shader variant came from, its typed key and the SHA-256 of its SPIR-V.</summary>");
        sb.AppendLine("public static partial class ShaderCatalog");
        sb.AppendLine("{");
        sb.AppendLine("    public static readonly ShaderInfo[] All =");
        sb.AppendLine("    [");
        for (int i = 0; i < variants.Count; i++)
        {
            var v = variants[i];
            string sha;
            using (var h = SHA256.Create()) sha = BitConverter.ToString(h.ComputeHash(File.ReadAllBytes(outputs[i]))).Replace("-", "").ToLowerInvariant();
            var key = "new(ShaderFamily." + Pascal(v.Family)
                + string.Concat(v.Axes.Select(a => ", " + KeyProperty(a.Key.EnumType) + ": " + a.Key.EnumType + "." + Pascal(a.Value))) + ")";
            sb.AppendLine("        new(ShaderId." + Pascal(v.Name) + ", \"" + v.Name + "\", \"" + v.Source + "\", \"" + string.Join(" ", v.Defines) + "\", \"" + sha + "\", " + key + "),");
        }
        sb.AppendLine("    ];");
        sb.AppendLine("}");
        var catalog = sb.ToString();
        if (!File.Exists(CatalogFile) || File.ReadAllText(CatalogFile) != catalog) File.WriteAllText(CatalogFile, catalog);

        Compiled = outputs.Select(o => (ITaskItem)new TaskItem(o)).ToArray();
        return true;
    }

    // Runs a tool; null when it succeeded silently, else what went wrong.
    private static string RunTool(string tool, List<string> args, string installHint)
    {
        var psi = new ProcessStartInfo(tool, string.Join(" ", args.Select(a => "\"" + a.Replace("\"", "\\\"") + "\"")))
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        Process p;
        try { p = Process.Start(psi)!; }
        catch (Exception e) { return "cannot run '" + tool + "' (" + e.Message + "). " + installHint; }
        var stderrTask = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var stderr = stderrTask.Result;
        if (p.ExitCode != 0 || stderr.Trim().Length > 0 || stdout.Trim().Length > 0) return tool + " failed:\n" + stderr + stdout;
        return null;
    }

    private static string Pascal(string name)
    {
        var sb = new StringBuilder();
        foreach (var part in name.Split('_'))
            if (part.Length > 0) sb.Append(char.ToUpperInvariant(part[0])).Append(part.Substring(1));
        return sb.ToString();
    }
}
