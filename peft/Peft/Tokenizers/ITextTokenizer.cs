// Text <-> token ids for a causal language model, with a per-token decoder for streaming output.
namespace VkPeft.Peft.Tokenizers;

public interface ITextTokenizer
{
    int VocabSize { get; }
    int Bos { get; }
    int Eos { get; }

    /// <summary>
    /// Token ids of <paramref name="text"/>. <paramref name="bos"/>: add the tokenizer's own leading special tokens (BOS;
    /// for a tokenizer.json whatever its post-processor and tokenizer_config.json add, as Hugging Face's
    /// add_special_tokens); <paramref name="eos"/>: end with EOS.
    /// </summary>
    int[] Encode(string text, bool bos = true, bool eos = false);

    /// <summary>Text of a token sequence; BOS/EOS and other control tokens produce no text.</summary>
    string Decode(ReadOnlySpan<int> ids);

    /// <summary>Text that token <paramref name="id"/> adds after <paramref name="prev"/> (-1 at the start), for streaming.</summary>
    string DecodeToken(int prev, int id);
}
