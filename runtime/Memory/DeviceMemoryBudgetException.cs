// Raised when an allocation would push the arena past its memory budget; says what was asked, what is live, and the limit.
using System.Text;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Memory;

public sealed class DeviceMemoryBudgetException : Exception
{
    public DeviceMemoryBudgetException(string name, MemoryCategory category, ulong requested, ulong budget, MemoryAccounting acc, string reason)
        : base(Describe(name, category, requested, budget, acc, reason))
    {
        Requested = requested;
        Budget = budget;
    }

    public ulong Requested { get; }
    public ulong Budget { get; }

    private static string Describe(string name, MemoryCategory category, ulong requested, ulong budget, MemoryAccounting acc, string reason)
    {
        var sb = new StringBuilder();
        sb.Append($"out of device memory: '{name}' ({category}) needs {ByteSize.Format(requested)}; {reason}. ");
        sb.Append($"Limit {ByteSize.Format(budget)}, reserved {ByteSize.Format(acc.ReservedBytes)}, live by category: ");
        sb.Append(string.Join(", ", acc.CurrentByCategory().Where(kv => kv.Value > 0).Select(kv => $"{kv.Key.ToString().ToLowerInvariant()} {ByteSize.Format(kv.Value)}")));
        return sb.ToString();
    }
}
