// `vkpeft demo`: the main job on a default model. Until the trainer lands it shows the device vkpeft would train on.
using System.CommandLine;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public static class DemoCommand
{
    public static Command Create()
    {
        var cmd = new Command("demo", "Fine-tune a small default model and show before/after (currently: device check)");
        cmd.SetAction(parse =>
        {
            Console.WriteLine("vkpeft demo: QLoRA training is not built yet; showing the device it will run on.");
            using var ctx = new VulkanContext(CliApp.RuntimeOptionsFrom(parse));
            Console.WriteLine($"device: {ctx.Caps.Name} ({ctx.Caps.Kind}), {ByteSize.Format(ctx.Arena.Budget)} usable");
            return 0;
        });
        return cmd;
    }
}
