// Idempotent, thread-safe Dispose for every runtime object; no finalizers ever touch Vulkan.
namespace VkPeft.Runtime.Vulkan;

public abstract class DisposableObject : IDisposable
{
    private int _disposed;

    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        DisposeCore();
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the object's resources; runs at most once.</summary>
    protected abstract void DisposeCore();

    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);
}
