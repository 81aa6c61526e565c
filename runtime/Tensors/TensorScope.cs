// Ownership while a constructor allocates: what it creates goes into a scope; if the constructor throws before it
// takes the tensors over with Keep, disposing the scope frees them at once (instead of when the context goes away).
namespace VkPeft.Runtime.Tensors;

/// <summary>
/// Usage: <c>using var scope = new TensorScope(); _a = scope.Add(DeviceTensor.Create(…)); …; _owned = scope.Keep();</c>
/// — Keep is the constructor's last statement; the object's Dispose then disposes what Keep returned.
/// </summary>
public sealed class TensorScope : IDisposable
{
    private List<IDisposable>? _items = [];

    /// <summary>Takes <paramref name="item"/> into the scope and returns it.</summary>
    public T Add<T>(T item) where T : IDisposable
    {
        ArgumentNullException.ThrowIfNull(item);
        (_items ?? throw new InvalidOperationException("the scope's items were already kept")).Add(item);
        return item;
    }

    /// <summary>Hands everything added over to the caller (in creation order); disposing the scope then does nothing.</summary>
    public IReadOnlyList<IDisposable> Keep()
    {
        var items = _items ?? throw new InvalidOperationException("the scope's items were already kept");
        _items = null;
        return items;
    }

    /// <summary>Disposes, newest first, whatever was added and not kept.</summary>
    public void Dispose()
    {
        if (_items == null) return;
        for (int i = _items.Count - 1; i >= 0; i--) _items[i].Dispose();
        _items = null;
    }
}
