// Times recorded GPU work with timestamp queries: the median over several runs of the summed kernel time.
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Bench;

public static class GpuTimer
{
    /// <summary>Median GPU seconds of <paramref name="record"/> over <paramref name="runs"/> runs (after one warm-up run).</summary>
    public static double MedianSeconds(VulkanContext ctx, Action record, int runs)
    {
        var rec = ctx.Commands;
        bool was = rec.ProfileEnabled;
        rec.ProfileEnabled = true;
        try
        {
            record();
            ctx.Sync();
            var times = new List<double>();
            for (int i = 0; i < runs; i++)
            {
                rec.Profile.Clear();
                record();
                ctx.Sync();
                times.Add(rec.Profile.TotalNs * 1e-9);
            }
            times.Sort();
            return times[times.Count / 2];
        }
        finally
        {
            rec.ProfileEnabled = was;
            rec.Profile.Clear();
        }
    }

    /// <summary>Median wall-clock seconds of a host action.</summary>
    public static double MedianWallSeconds(Action action, int runs)
    {
        action();
        var times = new List<double>();
        for (int i = 0; i < runs; i++)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            action();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }
}
