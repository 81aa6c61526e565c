// The settings of the server as errors name them (see SettingException): library code says which setting is wrong, and
// a front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

/// <summary>The settings of <see cref="ServeOptions"/> and of the adapters given at start that errors name.</summary>
public static class ServeSettings
{
    public static readonly Setting Port = Setting.Of<ServeOptions>(nameof(ServeOptions.Port));
    public static readonly Setting Host = Setting.Of<ServeOptions>(nameof(ServeOptions.Host));
    public static readonly Setting MaxBatch = Setting.Of<ServeOptions>(nameof(ServeOptions.MaxBatch));
    public static readonly Setting MaxContext = Setting.Of<ServeOptions>(nameof(ServeOptions.MaxContext));
    public static readonly Setting MaxQueue = Setting.Of<ServeOptions>(nameof(ServeOptions.MaxQueue));
    public static readonly Setting AdapterBudget = Setting.Of<ServeOptions>(nameof(ServeOptions.AdapterBudgetBytes));
    public static readonly Setting KvPageSize = Setting.Of<ServeOptions>(nameof(ServeOptions.KvPageSize));
    public static readonly Setting KvPages = Setting.Of<ServeOptions>(nameof(ServeOptions.KvPages));
    public static readonly Setting MemoryBudget = Setting.Of<ServeOptions>(nameof(ServeOptions.MemoryBudgetBytes));
    public static readonly Setting RequestTimeout = Setting.Of<ServeOptions>(nameof(ServeOptions.RequestTimeout));
    public static readonly Setting GatheredLoraRank = Setting.Of<ServeOptions>(nameof(ServeOptions.GatheredLoraRank));
    public static readonly Setting GatheredLoraSlots = Setting.Of<ServeOptions>(nameof(ServeOptions.GatheredLoraSlots));
    /// <summary>An adapter given by name and folder at start.</summary>
    public static readonly Setting Adapter = Setting.Of<ServeHost>("Adapter");
}
