// Entry point of the vkpeft command-line program.
namespace VkPeft.Cli;

public static class Program
{
    public static int Main(string[] args) => CliApp.Run(args);
}
