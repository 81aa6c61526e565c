// MSBuild task (compiled by RoslynCodeTaskFactory): turns the variants listed in shaders.list into SPIR-V with glslc,
// rebuilding only variants whose sources or includes changed, and writes the ShaderId catalog the runtime uses.
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
    [Output] public ITaskItem[] Compiled { get; set; } = Array.Empty<ITaskItem>();

    private sealed class Variant
    {
        public Variant(string name, string source, string[] defines, int line) { Name = name; Source = source; Defines = defines; Line = line; }
        public string Name { get; }
        public string Source { get; }
        public string[] Defines { get; }
        public int Line { get; }
    }

    public override bool Execute()
    {
        var variants = new List<Variant>();
        var lines = File.ReadAllLines(ListFile);
        for (int i = 0; i < lines.Length; i++)
        {
            var text = lines[i];
            int hash = text.IndexOf('#');
            if (hash >= 0) text = text.Substring(0, hash);
            var parts = text.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) continue;
            if (parts.Length < 2)
            {
                Log.LogError(null, null, null, ListFile, i + 1, 0, 0, 0, "expected '<id> <source.comp> [-DNAME[=VALUE] ...]'");
                return false;
            }
            if (variants.Any(v => v.Name == parts[0]))
            {
                Log.LogError(null, null, null, ListFile, i + 1, 0, 0, 0, "duplicate shader id '" + parts[0] + "'");
                return false;
            }
            var defines = parts.Skip(2).ToArray();
            if (defines.Any(d => !d.StartsWith("-D", StringComparison.Ordinal)))
            {
                Log.LogError(null, null, null, ListFile, i + 1, 0, 0, 0, "only -D defines are allowed after the source");
                return false;
            }
            variants.Add(new Variant(parts[0], parts[1], defines, i + 1));
        }

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
            var psi = new ProcessStartInfo(Glslc, string.Join(" ", args.Select(a => "\"" + a.Replace("\"", "\\\"") + "\"")))
            {
                RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
            };
            Process p;
            try { p = Process.Start(psi)!; }
            catch (Exception e)
            {
                errors.Add("cannot run '" + Glslc + "' (" + e.Message + "). Install shaderc's glslc: 'apt-get install glslc' (./vkpeft installs it for you when run as root).");
                return;
            }
            var stderrTask = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            var stderr = stderrTask.Result;
            if (p.ExitCode != 0 || stderr.Trim().Length > 0 || stdout.Trim().Length > 0)
            {
                errors.Add("glslc failed for shader '" + v.Name + "' (" + v.Source + " " + string.Join(" ", v.Defines) + "):\n" + stderr + stdout);
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
        sb.AppendLine("/// <summary>Where each shader variant came from and the SHA-256 of its SPIR-V.</summary>");
        sb.AppendLine("public static partial class ShaderCatalog");
        sb.AppendLine("{");
        sb.AppendLine("    public static readonly ShaderInfo[] All =");
        sb.AppendLine("    [");
        for (int i = 0; i < variants.Count; i++)
        {
            var v = variants[i];
            string sha;
            using (var h = SHA256.Create()) sha = BitConverter.ToString(h.ComputeHash(File.ReadAllBytes(outputs[i]))).Replace("-", "").ToLowerInvariant();
            sb.AppendLine("        new(ShaderId." + Pascal(v.Name) + ", \"" + v.Name + "\", \"" + v.Source + "\", \"" + string.Join(" ", v.Defines) + "\", \"" + sha + "\"),");
        }
        sb.AppendLine("    ];");
        sb.AppendLine("}");
        var catalog = sb.ToString();
        if (!File.Exists(CatalogFile) || File.ReadAllText(CatalogFile) != catalog) File.WriteAllText(CatalogFile, catalog);

        Compiled = outputs.Select(o => (ITaskItem)new TaskItem(o)).ToArray();
        return true;
    }

    private static string Pascal(string name)
    {
        var sb = new StringBuilder();
        foreach (var part in name.Split('_'))
            if (part.Length > 0) sb.Append(char.ToUpperInvariant(part[0])).Append(part.Substring(1));
        return sb.ToString();
    }
}
