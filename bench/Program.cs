// Entry point of the vkpeft benchmarks (./vkpeft bench ...).
namespace VkPeft.Bench;

public static class Program
{
    public static int Main(string[] args) => args.Length == 0 ? 0 : 1;
}
