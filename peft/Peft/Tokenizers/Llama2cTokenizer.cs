// Reader for llama2.c tokenizer.bin: int32 max_token_length, then per token f32 score, i32 length, bytes.
// The file does not store its vocabulary size; it must hold exactly the model's vocab_size tokens.
using VkPeft.Peft.Formats;

namespace VkPeft.Peft.Tokenizers;

public static class Llama2cTokenizer
{
    /// <summary>Loads <paramref name="path"/> expecting exactly <paramref name="vocabSize"/> tokens (BOS 1, EOS 2).</summary>
    public static ScoreMergeTokenizer Load(string path, int vocabSize, int bos = 1, int eos = 2)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"tokenizer file not found: {path}", path);
        byte[] data = File.ReadAllBytes(path);
        if (data.Length < 4) throw new ModelFormatException(path, "max_token_length", $"truncated: file is {data.Length} bytes");
        int maxLen = BitConverter.ToInt32(data, 0);
        if (maxLen <= 0 || maxLen > 1 << 16)
            throw new ModelFormatException(path, "max_token_length", $"implausible value {maxLen} (not a llama2.c tokenizer.bin?)");
        var pieces = new List<byte[]>(vocabSize);
        var scores = new List<float>(vocabSize);
        int o = 4;
        for (int i = 0; i < vocabSize; i++)
        {
            if (o + 8 > data.Length)
                throw new ModelFormatException(path, "vocab_size",
                    $"the file holds only {i} tokens but the model's vocab_size is {vocabSize} (truncated or wrong tokenizer)");
            float score = BitConverter.ToSingle(data, o);
            int len = BitConverter.ToInt32(data, o + 4);
            o += 8;
            if (len < 0 || len > maxLen || o + len > data.Length)
                throw new ModelFormatException(path, $"token[{i}].length",
                    len < 0 || len > maxLen ? $"length {len} outside 0..max_token_length {maxLen}" : "truncated inside the token bytes");
            pieces.Add(data.AsSpan(o, len).ToArray());
            scores.Add(score);
            o += len;
        }
        if (o != data.Length)
            throw new ModelFormatException(path, "vocab_size",
                $"{data.Length - o} bytes remain after {vocabSize} tokens: the tokenizer has more tokens than the model's vocab_size {vocabSize}");
        return new ScoreMergeTokenizer(pieces, scores, bos, eos);
    }

    /// <summary>Writes a tokenizer.bin (for tests and conversions). Atomic: temp file then rename.</summary>
    public static void Write(string path, ScoreMergeTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        string tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var w = new BinaryWriter(File.Create(tmp)))
            {
                int maxLen = 0;
                for (int i = 0; i < tokenizer.VocabSize; i++) maxLen = Math.Max(maxLen, tokenizer.PieceBytes(i).Length);
                w.Write(maxLen);
                for (int i = 0; i < tokenizer.VocabSize; i++)
                {
                    byte[] p = tokenizer.PieceBytes(i);
                    w.Write(tokenizer.Score(i));
                    w.Write(p.Length);
                    w.Write(p);
                }
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }
}
