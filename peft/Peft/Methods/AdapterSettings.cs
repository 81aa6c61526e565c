// The settings every method shares as errors name them (see SettingException): library code says which setting is wrong,
// and a front end spells it (the command line as a flag). A method's own options are its MethodOptions.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Methods;

/// <summary>The settings of <see cref="AdapterConfig"/> and of method lists (<see cref="MethodSpec"/>) that errors name.</summary>
public static class AdapterSettings
{
    public static readonly Setting Method = Setting.Of<AdapterConfig>(nameof(AdapterConfig.Method));
    public static readonly Setting Targets = Setting.Of<AdapterConfig>(nameof(AdapterConfig.Targets));
    /// <summary>A list of methods to compare or measure.</summary>
    public static readonly Setting Methods = Setting.Of<MethodSpec>(nameof(MethodSpec.ParseList));
}
