// What a training run does when the device or the disk fails mid-run: a clear error naming the step, the intact
// checkpoint and what to change; and the test-only fault injection (VKPEFT_FAULT) that proves it.
using VkPeft.Peft.Formats;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Peft.Training;

/// <summary>Training stopped because the device failed mid-step; the message names the intact checkpoint.</summary>
public sealed class TrainingFaultException(SettingMessage detail, Exception inner) : Exception(detail.ToString(), inner), ISettingError
{
    /// <summary>The message with the settings to change (the command line spells them as flags).</summary>
    public SettingMessage Detail { get; } = detail;
}

public static class TrainingFaults
{
    /// <summary>The clear error for a device failure during <paramref name="step"/>, or null for anything else.</summary>
    public static Exception? DuringStep(Exception e, int step, string outDir, int lastSaved)
    {
        var intact = lastSaved > 0
            ? new SettingMessage($"the last checkpoint in {outDir} (step {lastSaved}) is intact: rerun the same command with {TrainSettings.Resume}")
            : new SettingMessage($"no checkpoint was written yet in {outDir} ({TrainSettings.SaveEvery} N writes them): rerun the command");
        return e switch
        {
            VulkanDeviceLostException => new TrainingFaultException(new SettingMessage(
                $"the device was lost during step {step} (a driver reset, a sleep or a timeout: {e.Message}); {intact}"), e),
            VulkanOutOfMemoryException or DeviceMemoryBudgetException => new TrainingFaultException(new SettingMessage(
                $"the device ran out of memory during step {step} ({FirstLine(e.Message)}); {intact} after lowering {TrainSettings.Batch} or {TrainSettings.SeqLen}, or adding {TrainSettings.Checkpointing}, {TrainSettings.LossChunk} 32, {TrainSettings.OffloadCheckpoints} or {TrainSettings.OptimizerOnHost} (`vkpeft plan` finds a fit)"), e),
            _ => null,
        };
    }

    private static string FirstLine(string s) => s.Split('\n')[0].TrimEnd();

    /// <summary>Throws what a lost or exhausted device throws when that fault is injected for <paramref name="step"/>.</summary>
    public static void Injected(int step)
    {
        if (FaultInjection.At("device-lost", step)) throw new VulkanDeviceLostException($"waiting for step {step} (injected)");
        if (FaultInjection.At("device-oom", step)) throw new VulkanOutOfMemoryException(Silk.NET.Vulkan.Result.ErrorOutOfDeviceMemory, $"allocating for step {step} (injected)");
    }
}
