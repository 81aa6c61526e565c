// Version and identity of the vkpeft library.
namespace VkPeft.Peft;

public static class VkPeftInfo
{
    public const string Version = "0.1.0";
}
