// The settings of an export as errors name them (see SettingException): library code says which setting is wrong, and a
// front end spells it (the command line as a flag).
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Export;

/// <summary>The settings of <see cref="ExportOptions"/> that errors name.</summary>
public static class ExportSettings
{
    public static readonly Setting Format = Setting.Of<ExportOptions>(nameof(ExportOptions.Format));
    public static readonly Setting DType = Setting.Of<ExportOptions>(nameof(ExportOptions.DType));
}
