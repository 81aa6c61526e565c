// Regular expressions over Unicode code points. .NET's Regex works on UTF-16 units, so a letter outside the Basic
// Multilingual Plane (𠀀, 𝐀) is two surrogates that \p{L} does not match, where Hugging Face's engines see one letter.
// Each supplementary code point is therefore replaced by one BMP stand-in of the same general category before
// matching, and match boundaries are mapped back to the original text. (.NET's \s is Unicode White_Space, as in the
// reference engine.)
using System.Globalization;
using System.Text.RegularExpressions;

namespace VkPeft.Peft.Tokenizers;

public sealed class CodePointRegex
{
    private static readonly char[] StandIns = BuildStandIns();
    private readonly Regex _regex;

    public CodePointRegex(string pattern, RegexOptions options = RegexOptions.None)
    {
        _regex = new Regex(pattern, options | RegexOptions.CultureInvariant, TimeSpan.FromSeconds(10));
    }

    public string Pattern => _regex.ToString();

    /// <summary>(start, length) of every non-empty match, in UTF-16 units of <paramref name="text"/>.</summary>
    public List<(int Start, int Length)> Matches(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<(int, int)>();
        int[]? map = null;
        string subject = text;
        for (int i = 0; i < text.Length; i++)
            if (char.IsSurrogate(text[i])) { (subject, map) = Substitute(text); break; }
        foreach (Match m in _regex.Matches(subject))
        {
            if (m.Length == 0) continue;
            if (map is null) result.Add((m.Index, m.Length));
            else result.Add((map[m.Index], map[m.Index + m.Length] - map[m.Index]));
        }
        return result;
    }

    /// <summary>The text with supplementary code points as single stand-ins; map[i] = original index of unit i.</summary>
    private static (string, int[]) Substitute(string text)
    {
        var chars = new char[text.Length];
        var map = new List<int>(text.Length + 1);
        int n = 0;
        for (int i = 0; i < text.Length; i++)
        {
            map.Add(i);
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                int cp = char.ConvertToUtf32(text[i], text[i + 1]);
                chars[n++] = StandIns[(int)CharUnicodeInfo.GetUnicodeCategory(cp)];
                i++;
            }
            else chars[n++] = text[i];
        }
        map.Add(text.Length);
        return (new string(chars, 0, n), map.ToArray());
    }

    /// <summary>For each general category, the last non-ASCII BMP character of that category (unpaired surrogates stay).</summary>
    private static char[] BuildStandIns()
    {
        var table = new char[32];
        for (int c = 0xFFFF; c >= 0x80; c--)
        {
            if (c is >= 0xD800 and <= 0xDFFF) continue;
            int cat = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (table[cat] == '\0') table[cat] = (char)c;
        }
        table[(int)UnicodeCategory.Surrogate] = '\uD800';
        return table;
    }
}
