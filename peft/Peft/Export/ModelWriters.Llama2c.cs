// llama2.c v0 checkpoints (float32) and their tokenizer.bin.
using VkPeft.Peft.Formats;
using VkPeft.Peft.Models;
using VkPeft.Peft.Tokenizers;

namespace VkPeft.Peft.Export;

internal static partial class ModelWriters
{
    public static void WriteLlama2c(string path, MergedModel m, LoadedModel source, ExportOptions o, ExportReport report)
    {
        if (o.DType != ExportDType.F32) throw new ExportException($"llama2.c v0 files are float32 only (got dtype {ExportOptions.DTypeName(o.DType)})");
        var (c, w) = ModelTensors.ToLayout(m.Config, m.Weights, RopeLayout.InterleavedPairs);
        try
        {
            Llama2cCheckpoint.WriteV0(path, c, w);
        }
        catch (ArgumentException e)
        {
            throw new ExportException("cannot export to llama2.c: " + e.Message, e);
        }
        foreach (var (kind, layer) in Tensors(c, w))
        {
            var shape = LlamaWeights.ShapeOf(c, kind);
            report.Tensors.Add(new ExportedTensor(layer < 0 ? kind.ToString() : $"layers.{layer}.{kind}", "F32", shape.Select(d => (long)d).ToArray(), 4L * Pick(w, kind, layer)!.Length));
        }
        report.Notes.Add(c.TiedClassifier ? "shared classifier (positive vocab_size in the header)" : "separate classifier (negative vocab_size in the header)");
    }

    /// <summary>Writes tokenizer.bin next to a llama2.c export (copy of the source's, or converted from a score-merge vocabulary).</summary>
    public static void WriteLlama2cTokenizer(string modelPath, LoadedModel source, bool force, ExportReport report)
    {
        string target = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelPath))!, "tokenizer.bin");
        if (File.Exists(target) && !force)
        {
            report.Notes.Add($"kept the existing {target} (pass force to replace it)");
            return;
        }
        if (source.Source.Format is ModelSourceFormat.Llama2cV0 or ModelSourceFormat.Llama2cV1 && source.Source.TokenizerPath is { } tok)
        {
            if (Path.GetFullPath(tok) != target) File.Copy(tok, target, overwrite: true);
        }
        else if (source.Tokenizer is ScoreMergeTokenizer sm) Llama2cTokenizer.Write(target, sm);
        else
        {
            report.Notes.Add("no tokenizer.bin written: the source tokenizer is not a score-merge (SentencePiece-style) vocabulary");
            return;
        }
        report.Files.Add(target);
    }
}
