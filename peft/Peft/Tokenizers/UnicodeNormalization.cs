// Unicode normalization (NFC, NFD, NFKC, NFKD) from a table, because the build runs with InvariantGlobalization,
// under which string.Normalize leaves text unchanged. The table (UnicodeNormalizationData.txt, embedded) holds the
// canonical combining classes and decomposition mappings; Hangul syllables are composed and decomposed by formula.
// Algorithm as in UAX #15: full decomposition, canonical ordering, then canonical composition for the C forms.
using System.Globalization;
using System.Text;

namespace VkPeft.Peft.Tokenizers;

public static class UnicodeNormalization
{
    private sealed class Tables
    {
        public readonly Dictionary<int, int> Ccc = [];
        public readonly Dictionary<int, int[]> Canonical = [];
        public readonly Dictionary<int, int[]> Compatibility = [];
        public readonly Dictionary<long, int> Compose = [];
    }

    private static readonly Lazy<Tables> Data = new(LoadTables);

    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    public static string Normalize(string text, NormalizationForm form)
    {
        ArgumentNullException.ThrowIfNull(text);
        bool simple = true;
        foreach (char c in text) if (c >= 0xA0) { simple = false; break; }
        if (simple) return text;
        var t = Data.Value;
        bool compat = form is NormalizationForm.FormKC or NormalizationForm.FormKD;
        var cps = new List<int>(text.Length);
        foreach (var r in text.EnumerateRunes()) Decompose(t, r.Value, compat, cps);
        // Canonical ordering: stable sort of each run of non-starters by combining class.
        for (int i = 1; i < cps.Count; i++)
        {
            int cc = CombiningClass(t, cps[i]);
            if (cc == 0) continue;
            int j = i;
            while (j > 0 && CombiningClass(t, cps[j - 1]) > cc) { (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]); j--; }
        }
        if (form is NormalizationForm.FormC or NormalizationForm.FormKC) cps = Compose(t, cps);
        var sb = new StringBuilder(cps.Count + 8);
        foreach (int cp in cps) sb.Append(char.ConvertFromUtf32(cp));
        return sb.ToString();
    }

    private static int CombiningClass(Tables t, int cp) => t.Ccc.TryGetValue(cp, out int c) ? c : 0;

    private static void Decompose(Tables t, int cp, bool compat, List<int> output)
    {
        if (cp >= SBase && cp < SBase + SCount)
        {
            int s = cp - SBase;
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if ((compat && t.Compatibility.TryGetValue(cp, out var m)) || t.Canonical.TryGetValue(cp, out m))
        {
            foreach (int x in m) Decompose(t, x, compat, output);
            return;
        }
        output.Add(cp);
    }

    private static List<int> Compose(Tables t, List<int> cps)
    {
        var output = new List<int>(cps.Count);
        int starter = -1;
        foreach (int c in cps)
        {
            int cc = CombiningClass(t, c);
            if (starter >= 0)
            {
                int last = output.Count - 1 > starter ? CombiningClass(t, output[^1]) : -1;
                bool blocked = last != -1 && (last == 0 || last >= cc);
                if (!blocked && TryCompose(t, output[starter], c, out int composed))
                {
                    output[starter] = composed;
                    continue;
                }
            }
            if (cc == 0) starter = output.Count;
            output.Add(c);
        }
        return output;
    }

    private static bool TryCompose(Tables t, int a, int b, out int composed)
    {
        if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
        {
            composed = SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
            return true;
        }
        if (a >= SBase && a < SBase + SCount && (a - SBase) % TCount == 0 && b > TBase && b < TBase + TCount)
        {
            composed = a + (b - TBase);
            return true;
        }
        return t.Compose.TryGetValue(((long)a << 21) | (uint)b, out composed);
    }

    private static Tables LoadTables()
    {
        var t = new Tables();
        using var stream = typeof(UnicodeNormalization).Assembly.GetManifestResourceStream("VkPeft.Peft.Tokenizers.UnicodeNormalizationData.txt")
            ?? throw new InvalidOperationException("embedded UnicodeNormalizationData.txt is missing from the build");
        using var reader = new StreamReader(stream);
        static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var f = line.Split(' ');
            switch (f[0])
            {
                case "c":
                    {
                        int dash = f[1].IndexOf('-', StringComparison.Ordinal);
                        int first = Hex(dash < 0 ? f[1] : f[1][..dash]), lastCp = dash < 0 ? first : Hex(f[1][(dash + 1)..]);
                        int cc = int.Parse(f[2], CultureInfo.InvariantCulture);
                        for (int cp = first; cp <= lastCp; cp++) t.Ccc[cp] = cc;
                        break;
                    }
                case "d" or "D":
                    {
                        int[] m = f.Skip(2).Select(Hex).ToArray();
                        t.Canonical[Hex(f[1])] = m;
                        if (f[0] == "d") t.Compose[((long)m[0] << 21) | (uint)m[1]] = Hex(f[1]);
                        break;
                    }
                case "k":
                    t.Compatibility[Hex(f[1])] = f.Skip(2).Select(Hex).ToArray();
                    break;
            }
        }
        return t;
    }
}
