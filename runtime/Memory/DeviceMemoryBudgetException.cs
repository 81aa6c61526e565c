// Raised when an allocation would push the arena past its memory budget; says what was asked, what is live, and the limit.
using System.Text;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Memory;

public sealed class DeviceMemoryBudgetException : Exception, ISettingError
{
    private readonly SettingMessage? _detail;

    public DeviceMemoryBudgetException(string name, MemoryCategory category, ulong requested, ulong budget, MemoryAccounting acc, string reason)
        : base(Head(name, category, requested, reason) + Tail(budget, acc))
    {
        Requested = requested;
        Budget = budget;
    }

    /// <summary>An allocation that does not fit, with a reason that names the settings to change (see <see cref="SettingMessage"/>).</summary>
    public DeviceMemoryBudgetException(string name, MemoryCategory category, ulong requested, ulong budget, MemoryAccounting acc, SettingMessage reason)
        : this(name, category, requested, budget, acc, reason.ToString())
    {
        string tail = Tail(budget, acc);
        _detail = new SettingMessage($"out of device memory: '{name}' ({category}) needs {ByteSize.Format(requested)}; {reason}. {tail}");
    }

    public ulong Requested { get; }
    public ulong Budget { get; }

    /// <summary>The message with the settings its reason names (the message itself when it names none).</summary>
    public SettingMessage Detail => _detail ?? SettingMessage.Plain(Message);

    private static string Head(string name, MemoryCategory category, ulong requested, string reason) =>
        $"out of device memory: '{name}' ({category}) needs {ByteSize.Format(requested)}; {reason}. ";

    private static string Tail(ulong budget, MemoryAccounting acc)
    {
        var sb = new StringBuilder();
        sb.Append($"Limit {ByteSize.Format(budget)}, reserved {ByteSize.Format(acc.ReservedBytes)}, live by category: ");
        sb.Append(string.Join(", ", acc.CurrentByCategory().Where(kv => kv.Value > 0).Select(kv => $"{kv.Key.ToString().ToLowerInvariant()} {ByteSize.Format(kv.Value)}")));
        return sb.ToString();
    }
}
