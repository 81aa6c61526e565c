// One training run per output folder: the run holds an exclusive lock on --out/.vkpeft.lock (an OS file lock, so it
// ends with the process however it ends) and names itself in .vkpeft.lock.owner; a second run is refused with the
// owner's pid, and a lock left by a dead process is simply taken over.
using System.Diagnostics;
using System.Globalization;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>Another live run holds the output folder.</summary>
public sealed class RunLockedException(SettingMessage detail) : Exception(detail.ToString()), ISettingError
{
    /// <summary>The message with the setting to change (the command line spells it as a flag).</summary>
    public SettingMessage Detail { get; } = detail;
}

public sealed class RunLock : IDisposable
{
    public const string FileName = ".vkpeft.lock";
    public const string OwnerFileName = ".vkpeft.lock.owner";

    private readonly FileStream _lock;
    private readonly string _ownerPath;

    private RunLock(FileStream held, string ownerPath)
    {
        _lock = held;
        _ownerPath = ownerPath;
    }

    /// <summary>Takes <paramref name="outDir"/> for this process, or throws <see cref="RunLockedException"/> naming the owner.</summary>
    public static RunLock Acquire(string outDir)
    {
        Directory.CreateDirectory(outDir);
        string path = Path.Combine(outDir, FileName);
        string ownerPath = Path.Combine(outDir, OwnerFileName);
        FileStream held;
        try
        {
            // FileShare.None is an exclusive flock on Unix and a sharing lock on Windows: released by the OS when the
            // owner exits, so a dead owner's lock is free to take.
            held = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException)
        {
            string owner = File.Exists(ownerPath) ? File.ReadAllText(ownerPath).Trim() : "unknown";
            throw new RunLockedException(new SettingMessage($"{outDir} is in use by another vkpeft run ({owner}); wait for it to finish or choose another {TrainSettings.Out}"));
        }
        var me = Process.GetCurrentProcess();
        string text = string.Create(CultureInfo.InvariantCulture, $"pid {Environment.ProcessId} on {Environment.MachineName}, started {me.StartTime.ToUniversalTime():yyyy-MM-dd HH:mm:ss} UTC");
        File.WriteAllText(ownerPath, text + "\n");
        held.SetLength(0);
        held.Write(System.Text.Encoding.UTF8.GetBytes(text + "\n"));
        held.Flush();
        return new RunLock(held, ownerPath);
    }

    public void Dispose()
    {
        try { File.Delete(_ownerPath); } catch (IOException) { }
        _lock.Dispose();
    }
}
