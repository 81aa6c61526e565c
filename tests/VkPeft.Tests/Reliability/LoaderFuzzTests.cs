// Seeded structure-aware fuzzing of every loader: each mutated input must end, within a time bound and without an
// allocation larger than the input justifies, in success or in an error the CLI prints as one line naming the file
// (exit code 2) — never a stack trace or a hang. ≥ 200 cases per format by default, ≥ 5,000 in the Exhaustive tier.
using System.Diagnostics;
using VkPeft.Cli;
using Xunit.Abstractions;

namespace VkPeft.Tests.Reliability;

public sealed class LoaderFuzzTests(ITestOutputHelper output)
{
    public const int DefaultCases = 200;
    public const int ExhaustiveCases = 5000;

    /// <summary>A case taking longer than this is a hang (tiny inputs load in milliseconds).</summary>
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(20);

    public static TheoryData<string> Formats() => new(FuzzCorpus.Names);

    [Theory]
    [MemberData(nameof(Formats))]
    public void DefaultSweep(string format) => Sweep(format, DefaultCases, seed: 1);

    [Theory]
    [MemberData(nameof(Formats))]
    [Trait("Category", "Exhaustive")]
    public void ExhaustiveSweep(string format) => Sweep(format, ExhaustiveCases, seed: 1000);

    [Fact]
    public void EverySeedLoads()
    {
        foreach (string name in FuzzCorpus.Names)
        {
            var target = FuzzCorpus.Create(name);
            using var dir = new Models.TempDir();
            Write(target, dir.Path, null, null);
            target.Load(dir.Path);
        }
    }

    /// <summary>The tokenizer.model seed is a working SentencePiece model: it encodes as the score-merge tokenizer over the same pieces.</summary>
    [Fact]
    public void SentencePieceSeedEncodesLikeTheScoreMergeTokenizer()
    {
        using var dir = new Models.TempDir();
        File.WriteAllBytes(dir.File("tokenizer.model"), FuzzCorpus.SentencePieceModel());
        var sp = VkPeft.Peft.Tokenizers.HfTokenizers.LoadSentencePiece(dir.File("tokenizer.model"));
        var reference = FuzzCorpus.Tokenizer();
        Assert.Equal(FuzzCorpus.Pieces.Length, sp.VocabSize);
        foreach (string text in new[] { "the hat", "an other tiger", "in a tent he sat" })
            Assert.Equal(reference.Encode(text), sp.Encode(text));
    }

    private void Sweep(string format, int cases, int seed)
    {
        var target = FuzzCorpus.Create(format);
        var failures = new List<string>();
        int ok = 0, refused = 0;
        var clock = Stopwatch.StartNew();
        using var dir = new ScratchDir();
        Write(target, dir.Path, null, null);
        string? dirty = null;   // the file the previous case mutated; writing files is most of a case's cost
        for (int i = 0; i < cases; i++)
        {
            var rng = new Random(seed * 1_000_003 + i);
            var (file, kind) = target.Mutable[rng.Next(target.Mutable.Count)];
            target.Structures.TryGetValue(file, out var structure);
            var (bytes, what) = Mutator.Mutate(target.Files[file], kind, structure, rng);
            if (dirty is not null && dirty != file) File.WriteAllBytes(Path.Combine(dir.Path, dirty), target.Files[dirty]);
            File.WriteAllBytes(Path.Combine(dir.Path, file), bytes);
            dirty = file;
            // AfterWrite derives files from the others (a re-signed manifest): it runs on every case, so nothing derived
            // from an earlier mutation survives into this one.
            target.AfterWrite?.Invoke(dir.Path, file);
            var outcome = RunCase(target, dir.Path, bytes.Length);
            if (outcome is null) ok++;
            else if (outcome.StartsWith("refused: ", StringComparison.Ordinal)) refused++;
            else failures.Add($"case {i} ({file}: {what}): {outcome}");
        }
        output.WriteLine($"{format}: {cases} cases in {clock.Elapsed.TotalSeconds:F1} s: {ok} loaded, {refused} refused with a one-line error, {failures.Count} failures");
        Assert.True(failures.Count == 0, $"{format}: {failures.Count} of {cases} cases failed:\n" + string.Join("\n", failures.Take(30)));
    }

    /// <summary>Null when the load succeeded, "refused: ..." for a clean one-line error, otherwise the failure.</summary>
    internal static string? RunCase(FuzzTarget target, string dir, long mutatedBytes)
    {
        long inputBytes = target.Files.Values.Sum(f => (long)f.Length) + mutatedBytes;
        // The float32 model the loaders build is at most ~8× the smallest encoding (4-bit) plus copies; 64 MiB of slack.
        long allocationLimit = 64L * inputBytes + (64L << 20);
        long allocated = 0;
        Exception? error = null;
        // A dedicated thread, not the thread pool: while other test classes block pool threads, a queued case can wait
        // for the pool to grow, which cost seconds per sweep.
        var worker = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try { target.Load(dir); }
            catch (Exception e) { error = e; }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }) { IsBackground = true, Name = "fuzz case" };
        worker.Start();
        if (!worker.Join(CaseTimeout)) return $"hang: no result after {CaseTimeout.TotalSeconds} s";
        if (allocated > allocationLimit) return $"allocated {allocated} bytes for {inputBytes} bytes of input" + (error is null ? "" : $" ({error.GetType().Name})");
        return Classify(error, dir, target);
    }

    internal static string? Classify(Exception? error, string dir, FuzzTarget target)
    {
        if (error is null) return null;
        string? message = CliApp.UserError(error);
        if (message is null) return $"crash (the CLI would print a stack trace): {error.GetType().Name}: {error.Message} at {error.StackTrace?.Split('\n').FirstOrDefault()?.Trim()}";
        if (message.Contains('\n') || message.Contains('\r')) return $"multi-line error: {message}";
        bool namesFile = message.Contains(dir, StringComparison.Ordinal) || target.Files.Keys.Any(f => message.Contains(Path.GetFileName(f), StringComparison.Ordinal));
        if (!namesFile) return $"error does not name the file: {message}";
        return "refused: " + message;
    }

    /// <summary>
    /// A scratch folder in memory (/dev/shm) where the system has one, else in the temp folder: a sweep writes a file
    /// per case and only reads it back, so nothing needs a disk.
    /// </summary>
    private sealed class ScratchDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("vkpeft-fuzz-").FullName;

        public ScratchDir()
        {
            if (!OperatingSystem.IsLinux() || !Directory.Exists("/dev/shm")) return;
            try
            {
                string memory = System.IO.Path.Combine("/dev/shm", System.IO.Path.GetFileName(Path));
                Directory.CreateDirectory(memory);
                Directory.Delete(Path);
                Path = memory;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
        }
    }

    internal static void Write(FuzzTarget target, string dir, string? file, byte[]? bytes)
    {
        foreach (var (name, data) in target.Files)
        {
            string path = Path.Combine(dir, name);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, name == file ? bytes! : data);
        }
    }
}
