// Sizes long kernels' dispatches by work so that none runs longer than a target time on the device (GPU watchdogs end
// long jobs: Windows TDR after 2 s, amdgpu job timeouts), and submits them before much more than that is queued;
// each kernel's throughput is learned from the measured device time of its dispatches (timestamp queries).
using System.Runtime.CompilerServices;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Runtime.Kernels;

/// <summary>
/// Per device: the device seconds one dispatch may take, each kernel's throughput in work units (FLOPs) per second, and
/// the work queued since the last submit. Kernels ask <see cref="ItemsPerDispatch"/> how many keys (or rows) one
/// dispatch may take, pass <see cref="Learn"/> as the dispatch's timing callback and call <see cref="Queued"/> after
/// recording it. Before a kernel's first measurement a conservative rate is assumed. Item counts are rounded down to a
/// power of two (times a block), so small changes in the learned rate do not change how work is split (results are
/// bit-identical run to run once the rate has settled). Off on CPU devices (no watchdog; lavapipe's loop limit splits
/// its dispatches anyway) unless <see cref="Enabled"/> is set.
/// </summary>
public sealed class DispatchBudget
{
    private static readonly ConditionalWeakTable<VulkanContext, DispatchBudget> PerContext = new();

    /// <summary>The budget of <paramref name="ctx"/>'s device.</summary>
    public static DispatchBudget For(VulkanContext ctx) => PerContext.GetValue(ctx, c => new DispatchBudget(c.Caps.Kind != DeviceKind.Cpu));

    /// <summary>FLOPs per second assumed for a kernel not yet measured: far below any GPU's fp32 peak.</summary>
    public const double InitialRate = 1e11;

    private readonly Dictionary<string, double> _rates = [];
    private double _queuedSeconds;

    private DispatchBudget(bool enabled) => Enabled = enabled;

    /// <summary>Whether dispatches are split by time at all.</summary>
    public bool Enabled { get; set; }

    /// <summary>Device seconds one dispatch should stay under.</summary>
    public double TargetSeconds { get; set; } = 0.1;

    /// <summary>Estimated device seconds after which recorded work is submitted.</summary>
    public double SubmitSeconds { get; set; } = 0.5;

    /// <summary>The throughput (units per second) assumed for <paramref name="kernel"/>.</summary>
    public double Rate(string kernel) => _rates.TryGetValue(kernel, out var r) ? r : InitialRate;

    /// <summary>Forgets what was measured (tests).</summary>
    public void Reset() { _rates.Clear(); _queuedSeconds = 0; }

    /// <summary>
    /// Items one dispatch of <paramref name="kernel"/> may take when each costs at most <paramref name="unitsPerItem"/>:
    /// a power of two times <paramref name="block"/> (at least one block), or long.MaxValue when the budget is off.
    /// </summary>
    public long ItemsPerDispatch(string kernel, double unitsPerItem, int block)
    {
        if (!Enabled || unitsPerItem <= 0) return long.MaxValue;
        double items = TargetSeconds * Rate(kernel) / unitsPerItem / block;
        long blocks = 1;
        while (blocks * 2 <= items && blocks < (1L << 40)) blocks *= 2;
        return blocks * block;
    }

    /// <summary>A timing callback for a dispatch of <paramref name="units"/> work: updates the kernel's rate (null when off).</summary>
    public Action<double>? Learn(string kernel, double units)
    {
        if (!Enabled || units <= 0) return null;
        return seconds =>
        {
            if (seconds < 2e-5) return;   // too short to time reliably
            double measured = units / seconds;
            // A slow dispatch lowers the rate at once; faster ones raise it gradually.
            _rates[kernel] = _rates.TryGetValue(kernel, out var r) && measured > r ? Math.Sqrt(r * measured) : measured;
        };
    }

    /// <summary>Notes a recorded dispatch of <paramref name="units"/> work; submits once enough is queued.</summary>
    public void Queued(VulkanContext ctx, string kernel, double units)
    {
        if (!Enabled) return;
        _queuedSeconds += units / Rate(kernel);
        if (_queuedSeconds < SubmitSeconds) return;
        ctx.Commands.Flush();
        _queuedSeconds = 0;
    }
}
