// Typed exceptions for Vulkan failures and the single check every VkResult goes through.
using Silk.NET.Vulkan;

namespace VkPeft.Runtime.Vulkan;

/// <summary>A Vulkan call failed; carries the VkResult and what was being done.</summary>
public class VulkanException : Exception
{
    public VulkanException(Result result, string what)
        : base($"Vulkan error {result} while {what}") { Result = result; What = what; }

    public VulkanException(string message) : base(message) { Result = Result.ErrorUnknown; What = message; }

    public Result Result { get; }
    public string What { get; }
}

/// <summary>The driver ran out of device (or host) memory.</summary>
public sealed class VulkanOutOfMemoryException : VulkanException
{
    public VulkanOutOfMemoryException(Result result, string what) : base(result, what) { }
}

/// <summary>The device was lost (driver crash, timeout, reset). Nothing on it can be trusted afterwards.</summary>
public sealed class VulkanDeviceLostException : VulkanException
{
    public VulkanDeviceLostException(string what) : base(Result.ErrorDeviceLost, what) { }
}

/// <summary>A required feature, extension or limit is missing on the chosen device.</summary>
public sealed class VulkanUnsupportedException : VulkanException, ISettingError
{
    public VulkanUnsupportedException(string message) : base(message) => Detail = new SettingMessage($"{message}");

    /// <summary>A missing or unusable device that a setting asked for (e.g. <see cref="RuntimeSettings.Device"/>).</summary>
    public VulkanUnsupportedException(SettingMessage detail) : base(detail.ToString()) => Detail = detail;

    public SettingMessage Detail { get; }
}

/// <summary>Maps VkResult codes to exceptions.</summary>
public static class VkCheck
{
    public static void Ok(Result result, string what)
    {
        if (result == Result.Success) return;
        throw result switch
        {
            Result.ErrorOutOfDeviceMemory or Result.ErrorOutOfHostMemory or Result.ErrorOutOfPoolMemory
                => new VulkanOutOfMemoryException(result, what),
            Result.ErrorDeviceLost => new VulkanDeviceLostException(what),
            Result.ErrorFeatureNotPresent or Result.ErrorExtensionNotPresent or Result.ErrorLayerNotPresent
                or Result.ErrorIncompatibleDriver => new VulkanUnsupportedException($"{what}: {result}"),
            _ => new VulkanException(result, what),
        };
    }
}
