// Builds the vkpeft command tree and runs it.
namespace VkPeft.Cli;

public static class CliApp
{
    public static int Run(string[] args)
    {
        Console.WriteLine("vkpeft " + VkPeft.Peft.VkPeftInfo.Version);
        return args.Length == 0 ? 0 : 1;
    }
}
