// Test-only fault injection for writers and the training loop, off unless VKPEFT_FAULT is set (or Set is called):
// it lets tests and child processes prove that a full disk, a lost device or a poisoned gradient ends cleanly.
using System.Globalization;

namespace VkPeft.Peft.Formats;

/// <summary>
/// Test-only fault injection, off unless VKPEFT_FAULT is set (or <see cref="Set"/> is called): <c>disk-full:NAME</c>
/// fails the write of any file named NAME with the "No space left on device" error, <c>device-lost:STEP</c> and
/// <c>device-oom:STEP</c> fail that optimizer step as the device would, <c>nan-grad:STEP</c> poisons a gradient of
/// that step.
/// </summary>
public static class FaultInjection
{
    private static readonly string? FromEnvironment = Environment.GetEnvironmentVariable("VKPEFT_FAULT");
    private static readonly AsyncLocal<string?> Local = new();

    /// <summary>Sets the fault for the calling flow only (so parallel tests are not affected); null turns it off.</summary>
    public static void Set(string? spec) => Local.Value = spec;

    private static string? Arg(string kind) =>
        (Local.Value ?? FromEnvironment) is { } s && s.StartsWith(kind + ":", StringComparison.Ordinal) ? s[(kind.Length + 1)..] : null;

    /// <summary>Throws the disk-full error when a write of <paramref name="fileName"/> is set to fail.</summary>
    public static void BeforeWrite(string fileName)
    {
        if (Arg("disk-full") is { } name && (fileName == name || fileName.StartsWith(name + ".tmp", StringComparison.Ordinal)))
            throw new IOException($"No space left on device (injected) while writing {fileName}");
    }

    /// <summary>Whether <paramref name="kind"/> is set for <paramref name="step"/>.</summary>
    public static bool At(string kind, int step) => Arg(kind) is { } s && s == step.ToString(CultureInfo.InvariantCulture);
}
