// Inside the peft assembly, namespaces depend one way too: each folder may use only its own layer and the layers below
// it (read from the sources' using directives and qualified names, so a new back edge or a new folder fails here).
namespace VkPeft.Tests.Runtime;

public sealed class NamespaceLayerTests
{
    /// <summary>
    /// Lowest first. Formats, Models and Tokenizers are one layer: ModelFormatException (Formats) is the error of every
    /// reader, tokenizers and config validation included, and ModelLoader (Models) dispatches to the format readers
    /// that build the Models records. The methods (VkPeft.Peft.Methods and one folder per method below it) sit on top:
    /// each owns its runtime, merge, memory terms and options, built on the machinery beneath.
    /// </summary>
    private static readonly string[][] Layers =
    [
        ["VkPeft.Peft"],
        ["VkPeft.Peft.Reports"],
        ["VkPeft.Peft.Formats", "VkPeft.Peft.Models", "VkPeft.Peft.Tokenizers"],
        ["VkPeft.Peft.Data", "VkPeft.Peft.Engine"],
        ["VkPeft.Peft.Export"],
        ["VkPeft.Peft.Training"],
        ["VkPeft.Peft.Planning"],
        ["VkPeft.Peft.Methods"],
    ];

    /// <summary>
    /// The uses that point up on purpose: every layer reaches the methods through the registry and the method contract
    /// (the VkPeft.Peft.Methods namespace itself, never a method's folder), and the PEFT adapter format and merge use
    /// LoRA's own delta (VkPeft.Peft.Methods.Lora), since PEFT's on-disk format is LoRA's, and (IA)³'s names and
    /// feed-forward list (VkPeft.Peft.Methods.Ia3), for PEFT's IA3 folders, LLaMA-Adapter's settings
    /// (VkPeft.Peft.Methods.LlamaAdapter), for PEFT's ADAPTION_PROMPT folders, and the prompt-side methods' settings and
    /// tensor names (VkPeft.Peft.Methods.Prompt, VkPeft.Peft.Methods.Prefix), for PEFT's PROMPT_TUNING and PREFIX_TUNING folders,
    /// DoRA's magnitude names (VkPeft.Peft.Methods.Dora), for PEFT's LORA folders with use_dora, and QA-LoRA's settings
    /// (VkPeft.Peft.Methods.QaLora), for PEFT's LORA folders with use_qalora. Training uses LoRA's settings
    /// (VkPeft.Peft.Methods.Lora): ReLoRA and LoftQ initialization are LoRA-only procedures of the trainer that read its
    /// rank and scaling.
    /// </summary>
    private static bool AllowedUpward(string from, string used) =>
        used == "VkPeft.Peft.Methods" || (from == "VkPeft.Peft.Export"
            && used is "VkPeft.Peft.Methods.Lora" or "VkPeft.Peft.Methods.Ia3" or "VkPeft.Peft.Methods.LlamaAdapter"
            or "VkPeft.Peft.Methods.Prompt" or "VkPeft.Peft.Methods.Prefix" or "VkPeft.Peft.Methods.Dora" or "VkPeft.Peft.Methods.QaLora")
        || (from == "VkPeft.Peft.Training" && used == "VkPeft.Peft.Methods.Lora");

    private static int LayerOf(string ns)
    {
        for (int i = 0; i < Layers.Length; i++)
            if (Layers[i].Contains(ns)) return i;
        return -1;
    }

    /// <summary>True when <paramref name="ns"/> is a namespace some peft source declares (not a type name after a namespace).</summary>
    private static bool IsNamespace(string root, string ns) =>
        Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
            .Any(f => File.ReadLines(f).Any(l => l.StartsWith("namespace " + ns + ";", StringComparison.Ordinal)));

    private static string PeftSources()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln")))
                return Path.Combine(dir.FullName, "peft", "Peft");
        throw new DirectoryNotFoundException("repository root (Runtime.sln) not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void PeftNamespacesDependOneWay()
    {
        var root = PeftSources();
        var files = Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                     && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .ToList();
        Assert.True(files.Count > 20, $"found only {files.Count} sources under {root}");
        var violations = new List<string>();
        foreach (var file in files)
        {
            string text = File.ReadAllText(file);
            var nsMatch = System.Text.RegularExpressions.Regex.Match(text, @"^namespace\s+([\w.]+)\s*;", System.Text.RegularExpressions.RegexOptions.Multiline);
            Assert.True(nsMatch.Success, $"{file} has no file-scoped namespace");
            // A nested namespace (e.g. VkPeft.Peft.Methods.Lora) belongs to its top folder's layer.
            string ns = string.Join('.', nsMatch.Groups[1].Value.Split('.').Take(3));
            int own = LayerOf(ns);
            string rel = Path.GetRelativePath(root, file);
            if (own < 0)
            {
                violations.Add($"{rel}: namespace {ns} is in no layer of {nameof(NamespaceLayerTests)}.{nameof(Layers)} (add it where it belongs)");
                continue;
            }
            foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(text, @"\bVkPeft\.Peft\.([A-Z]\w*)(\.[A-Z]\w*)?"))
            {
                string used = "VkPeft.Peft." + m.Groups[1].Value;
                int layer = LayerOf(used);
                if (layer < 0) continue;   // a type of the root namespace, e.g. VkPeft.Peft.VkPeftInfo
                string usedFull = used + m.Groups[2].Value;   // with a method's folder, e.g. VkPeft.Peft.Methods.Lora
                if (layer > own && !AllowedUpward(ns, usedFull) && !(usedFull != used && AllowedUpward(ns, used) && m.Groups[2].Value.Length > 0 && !IsNamespace(root, usedFull)))
                    violations.Add($"{rel}: {ns} (layer {own}) uses {usedFull} (layer {layer}), a layer above it");
            }
        }
        Assert.True(violations.Count == 0, "namespace dependencies inside peft point the wrong way:\n" + string.Join('\n', violations.Distinct()));
    }
}
