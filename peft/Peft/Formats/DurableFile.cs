// Durable file replacement for checkpoints, reports and exports: temporary file, flush to disk, rename, folder fsync.
using System.Runtime.InteropServices;
using System.Text;

namespace VkPeft.Peft.Formats;

/// <summary>
/// Durable file replacement: write a temporary file beside the target, flush it to the disk, rename it over the
/// target and flush the folder, so a crash leaves the old or the new file and never a partial one.
/// </summary>
public static partial class DurableFile
{
    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Encoding.UTF8.GetBytes(text));

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, fs => fs.Write(bytes));

    /// <summary>Writes through <paramref name="write"/> into a temporary file that becomes <paramref name="path"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        FaultInjection.BeforeWrite(Path.GetFileName(path));
        string tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Flushes an already written file's data to the disk.</summary>
    public static void Flush(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        fs.Flush(flushToDisk: true);
    }

    /// <summary>Makes renames inside <paramref name="dir"/> durable (fsync of the folder; a no-op where unsupported).</summary>
    public static void SyncDirectory(string dir)
    {
        if (OperatingSystem.IsWindows()) return;   // NTFS journals renames; folders cannot be opened for fsync there
        int fd = Native.Open(dir, 0 /* O_RDONLY */);
        if (fd < 0) return;
        try
        {
            _ = Native.Fsync(fd);
        }
        finally
        {
            _ = Native.Close(fd);
        }
    }

    private static partial class Native
    {
        [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "fsync")]
        public static partial int Fsync(int fd);

        [LibraryImport("libc", EntryPoint = "close")]
        public static partial int Close(int fd);
    }
}
