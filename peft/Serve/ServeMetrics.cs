// The server's counters and gauges, written as Prometheus text at GET /metrics: requests by outcome, tokens, decode
// throughput, queue depth, batch size, time to first token, adapters resident, KV-cache pages and device memory by category.
using System.Globalization;
using System.Text;
using VkPeft.Runtime.Memory;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

public sealed class ServeMetrics
{
    private readonly object _lock = new();
    private readonly Dictionary<int, long> _requestsByStatus = [];
    private long _generated, _promptTokens, _steps, _stepRows, _firstTokens;
    private double _stepSeconds, _firstTokenSeconds;
    private int _lastBatch, _maxBatch;

    public int QueueDepth { get; set; }
    /// <summary>Sequences in the running batch.</summary>
    public int ActiveSequences { get; set; }
    /// <summary>Tokens generated since the start.</summary>
    public long GeneratedTokens { get { lock (_lock) return _generated; } }
    /// <summary>The most sequences one step has run together.</summary>
    public int MaxBatch { get { lock (_lock) return _maxBatch; } }

    public void RecordRequest(int status) { lock (_lock) _requestsByStatus[status] = _requestsByStatus.GetValueOrDefault(status) + 1; }
    public void AddPromptTokens(int n) { lock (_lock) _promptTokens += n; }
    public void AddGenerated(int n) { lock (_lock) _generated += n; }

    public void RecordStep(int sequences, int rows, double seconds)
    {
        lock (_lock)
        {
            _steps++;
            _stepRows += rows;
            _stepSeconds += seconds;
            _lastBatch = sequences;
            _maxBatch = Math.Max(_maxBatch, sequences);
        }
    }

    public void RecordFirstToken(double seconds)
    {
        lock (_lock)
        {
            _firstTokens++;
            _firstTokenSeconds += seconds;
        }
    }

    /// <summary>Prometheus text exposition of every metric.</summary>
    public string Format(AdapterPool pool, KvPagePool kv, long memoryBudget, VulkanContext ctx)
    {
        var sb = new StringBuilder();
        void Metric(string name, string type, string help, params (string Labels, double Value)[] values)
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            foreach (var (labels, value) in values)
                sb.Append(name).Append(labels.Length > 0 ? "{" + labels + "}" : "").Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        lock (_lock)
        {
            Metric("vkpeft_requests_total", "counter", "HTTP requests to the API by status code",
                [.. _requestsByStatus.OrderBy(kv => kv.Key).Select(kv => ($"status=\"{kv.Key}\"", (double)kv.Value))]);
            Metric("vkpeft_prompt_tokens_total", "counter", "Prompt tokens prefilled", ("", _promptTokens));
            Metric("vkpeft_generated_tokens_total", "counter", "Tokens generated", ("", _generated));
            Metric("vkpeft_steps_total", "counter", "Batched forward steps", ("", _steps));
            Metric("vkpeft_step_rows_total", "counter", "Token rows run through the model in all steps", ("", _stepRows));
            Metric("vkpeft_step_seconds_total", "counter", "Time spent in forward steps", ("", _stepSeconds));
            Metric("vkpeft_tokens_per_second", "gauge", "Generated tokens per second of step time since start",
                ("", _stepSeconds > 0 ? _generated / _stepSeconds : 0));
            Metric("vkpeft_batch_size", "gauge", "Sequences in the last step", ("", _lastBatch));
            Metric("vkpeft_batch_size_max", "gauge", "The most sequences one step has run together", ("", _maxBatch));
            Metric("vkpeft_time_to_first_token_seconds_mean", "gauge", "Mean time from queueing to the first token",
                ("", _firstTokens > 0 ? _firstTokenSeconds / _firstTokens : 0));
        }
        Metric("vkpeft_queue_depth", "gauge", "Requests waiting for a batch slot", ("", QueueDepth));
        Metric("vkpeft_active_sequences", "gauge", "Sequences in the running batch", ("", ActiveSequences));
        Metric("vkpeft_adapters_resident", "gauge", "Adapters on the device", ("", pool.ResidentCount));
        Metric("vkpeft_adapter_bytes", "gauge", "Device bytes of resident adapters", ("", pool.ResidentBytes));
        Metric("vkpeft_adapter_budget_bytes", "gauge", "Device bytes resident adapters may use", ("", pool.BudgetBytes));
        Metric("vkpeft_adapter_loads_total", "counter", "Adapters loaded onto the device", ("", pool.Loads));
        Metric("vkpeft_adapter_evictions_total", "counter", "Adapters evicted (least recently used)", ("", pool.Evictions));
        Metric("vkpeft_kv_pages", "gauge", "KV-cache pages by state (used: holding keys; free: not; reserved: promised to running sequences)",
            ("state=\"used\"", kv.Used), ("state=\"free\"", kv.Free), ("state=\"reserved\"", kv.Reserved));
        Metric("vkpeft_kv_page_tokens", "gauge", "Tokens per KV-cache page", ("", kv.PageSize));
        Metric("vkpeft_kv_page_bytes", "gauge", "Device bytes of one KV-cache page (every layer, keys and values)", ("", kv.PageBytes));
        Metric("vkpeft_memory_budget_bytes", "gauge", "Device bytes resident adapters and reserved KV pages may hold together", ("", memoryBudget));
        var byCategory = ctx.Arena.Accounting.CurrentByCategory();
        Metric("vkpeft_device_memory_bytes", "gauge", "Live device memory by category",
            [.. byCategory.OrderBy(kv => kv.Key).Select(kv => ($"category=\"{kv.Key.ToString().ToLowerInvariant()}\"", (double)kv.Value))]);
        return sb.ToString();
    }
}
