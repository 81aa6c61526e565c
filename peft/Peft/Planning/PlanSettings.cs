// The settings of the memory planner as errors name them (see SettingException): library code says which setting is
// wrong, and a front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Planning;

/// <summary>The settings of <see cref="TrainSetup"/> and <see cref="ModelCatalog"/> that errors name.</summary>
public static class PlanSettings
{
    /// <summary>A built-in model shape, by name.</summary>
    public static readonly Setting Config = new(nameof(ModelCatalog), nameof(ModelCatalog.Get));
    public static readonly Setting FreezeA = Setting.Of<TrainSetup>(nameof(TrainSetup.FreezeA));
}
