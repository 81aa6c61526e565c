// The adapters a server knows (name -> folder) and the ones resident on the device: loaded from disk on first use,
// kept under a byte budget (and, with the KV pages running sequences reserved, under the server's memory budget), and
// evicted least-recently-used first when a new one needs room — never while a running sequence uses one. Any PEFT method serves through its own device runtime (PeftMethod.CreateRuntime), so new methods
// plug in without changes here. Registration is thread-safe; loading and eviction run on the scheduler's thread only.
using System.Collections.Concurrent;
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Models;
using VkPeft.Peft.Methods;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Serve;

/// <summary>
/// An adapter the server knows: its name (the request's "model"), folder, method, whether it is on the device and
/// whether it sits in the gathered-LoRA pools (else it runs its own runtime).
/// </summary>
public sealed record AdapterInfo(string Name, string Directory, string Method, bool Resident, long DeviceBytes, bool Gathered);

/// <summary>A request named an adapter the server does not know.</summary>
public sealed class UnknownAdapterException(string name) : Exception($"the model '{name}' does not exist (GET /v1/models lists the base and adapters)")
{
    public string Name { get; } = name;
}

public sealed class AdapterPool : IDisposable
{
    private sealed class Resident(IAdapterRuntime runtime, IDisposable release, long bytes, long generation) : IDisposable
    {
        public IAdapterRuntime Runtime { get; } = runtime;
        /// <summary>Which registration of the name it was loaded for (a name unloaded and loaded again is a new adapter).</summary>
        public long Generation { get; } = generation;
        public long Bytes { get; } = bytes;
        public int Users { get; set; }
        public long LastUse { get; set; }

        public void Dispose()
        {
            release.Dispose();
        }
    }

    private readonly VulkanContext _ctx;
    private readonly LlamaConfig _config;
    private readonly BaseQuant _baseQuant;
    private readonly int _maxRows;
    private readonly ConcurrentDictionary<string, (string Dir, string Method, long Generation)> _known = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Resident> _resident = new(StringComparer.Ordinal);
    private readonly object _residentLock = new();
    private long _clock, _generation;
    private readonly GatheredLoraPool? _loraPool;

    /// <param name="budgetBytes">Most device bytes resident adapters may hold together.</param>
    /// <param name="maxRows">Rows of the largest batch step (the runtimes size their scratch for it).</param>
    /// <param name="loraPool">Where plain-LoRA adapters go (applied by gathered kernels); others get their own runtime.</param>
    public AdapterPool(VulkanContext ctx, LlamaConfig config, BaseQuant baseQuant, long budgetBytes, int maxRows, GatheredLoraPool? loraPool = null)
    {
        _loraPool = loraPool;
        _ctx = ctx;
        _config = config;
        _baseQuant = baseQuant;
        BudgetBytes = budgetBytes;
        _maxRows = maxRows;
    }

    public long BudgetBytes { get; }
    /// <summary>Device bytes resident adapters share with what <see cref="SharedBytes"/> counts (the reserved KV pages).</summary>
    public long MemoryBudgetBytes { get; set; } = long.MaxValue;
    /// <summary>Bytes of the memory budget held by others now (scheduler thread).</summary>
    public Func<long> SharedBytes { get; set; } = () => 0;
    public long Loads { get; private set; }
    public long Evictions { get; private set; }

    /// <summary>Device bytes of the resident adapters' tensors.</summary>
    public long ResidentBytes { get { lock (_residentLock) return _resident.Values.Sum(r => r.Bytes); } }
    public int ResidentCount { get { lock (_residentLock) return _resident.Count; } }

    public bool IsKnown(string name) => _known.ContainsKey(name);

    /// <summary>
    /// Registers an adapter folder under <paramref name="name"/> after reading and validating it against the base
    /// (errors name the file and field). Returns false when the name is taken.
    /// </summary>
    public bool Register(string name, string dir)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"adapter '{name}': '{dir}' is not a directory");
        var weights = AdapterIO.Load(dir, _config);
        return _known.TryAdd(name, (Path.GetFullPath(dir), weights.Config.Method.Name, Interlocked.Increment(ref _generation)));
    }

    /// <summary>Forgets an adapter; a resident copy is freed (by the scheduler) once no running sequence uses it. False when unknown.</summary>
    public bool Unregister(string name) => _known.TryRemove(name, out _);

    public IReadOnlyList<AdapterInfo> List()
    {
        lock (_residentLock)
            return [.. _known.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv =>
                new AdapterInfo(kv.Key, kv.Value.Dir, kv.Value.Method, _resident.TryGetValue(kv.Key, out var r), r?.Bytes ?? 0, r?.Runtime is GatheredLoraAdapter))];
    }

    /// <summary>
    /// The device runtime of <paramref name="name"/> for one more running sequence (scheduler thread): loaded when not
    /// resident, evicting idle adapters least-recently-used first. Null when it cannot fit now (every resident adapter
    /// is in use); <see cref="UnknownAdapterException"/> when the name is not registered.
    /// </summary>
    public IAdapterRuntime? Acquire(string name)
    {
        if (!_known.TryGetValue(name, out var entry)) throw new UnknownAdapterException(name);
        lock (_residentLock)
        {
            if (_resident.TryGetValue(name, out var r) && r.Generation != entry.Generation)
            {
                if (r.Users > 0) return null;   // the earlier adapter of this name is still running
                _resident.Remove(name);
                r.Dispose();
            }
            else if (r != null)
            {
                r.Users++;
                r.LastUse = ++_clock;
                return r.Runtime;
            }
        }
        var weights = AdapterIO.Load(entry.Dir, _config);
        long bytes = weights.Tensors.Values.Sum(t => t.Count) * sizeof(float);
        if (bytes > BudgetBytes)
            throw new InvalidOperationException($"adapter '{name}' needs {bytes} bytes, more than the adapter budget of {BudgetBytes}");
        bool pooled = _loraPool != null && _loraPool.Fits(weights);
        lock (_residentLock)
        {
            while (_resident.Values.Sum(x => x.Bytes) + bytes > BudgetBytes || (pooled && _loraPool!.FreeSlots == 0)
                   || _resident.Values.Sum(x => x.Bytes) + bytes + SharedBytes() > MemoryBudgetBytes)
            {
                var victim = _resident.Where(kv => kv.Value.Users == 0).OrderBy(kv => kv.Value.LastUse).FirstOrDefault();
                if (victim.Value == null) return null;
                _resident.Remove(victim.Key);
                victim.Value.Dispose();
                Evictions++;
            }
        }
        if (weights.Config.BaseQuant != _baseQuant)
            Console.Error.WriteLine($"warning: adapter '{name}' was trained against a {weights.Config.BaseQuant} base; serving it on the {_baseQuant} base");
        if (pooled)
        {
            var slot = _loraPool!.Add(weights)!;
            lock (_residentLock)
            {
                _resident[name] = new Resident(slot, new SlotRelease(_loraPool, slot), bytes, entry.Generation) { Users = 1, LastUse = ++_clock };
                Loads++;
            }
            return slot;
        }
        var loaded = InferenceAdapter.Create(_ctx, _config, weights, _maxRows);
        lock (_residentLock)
        {
            _resident[name] = new Resident(loaded.Runtime, loaded, bytes, entry.Generation) { Users = 1, LastUse = ++_clock };
            Loads++;
        }
        return loaded.Runtime;
    }

    /// <summary>One running sequence of <paramref name="name"/> finished; an unregistered adapter is freed when idle.</summary>
    public void Release(string name)
    {
        lock (_residentLock)
        {
            if (!_resident.TryGetValue(name, out var r)) return;
            r.Users--;
            if (r.Users == 0 && (!_known.TryGetValue(name, out var e) || e.Generation != r.Generation))
            {
                _resident.Remove(name);
                r.Dispose();
            }
        }
    }

    /// <summary>Device bytes of a resident runtime (0 for the base or one not in the pool).</summary>
    public long BytesOf(IAdapterRuntime? runtime)
    {
        if (runtime == null) return 0;
        lock (_residentLock) return _resident.Values.FirstOrDefault(r => ReferenceEquals(r.Runtime, runtime))?.Bytes ?? 0;
    }

    /// <summary>Evicts idle adapters, least recently used first, until <paramref name="bytes"/> are freed or none is idle (scheduler thread).</summary>
    public void EvictIdle(long bytes)
    {
        lock (_residentLock)
            while (bytes > 0)
            {
                var victim = _resident.Where(kv => kv.Value.Users == 0).OrderBy(kv => kv.Value.LastUse).FirstOrDefault();
                if (victim.Value == null) return;
                _resident.Remove(victim.Key);
                victim.Value.Dispose();
                Evictions++;
                bytes -= victim.Value.Bytes;
            }
    }

    /// <summary>Frees idle resident adapters that were unregistered (scheduler thread).</summary>
    public void Sweep()
    {
        lock (_residentLock)
            foreach (var name in _resident.Where(kv => kv.Value.Users == 0 && (!_known.TryGetValue(kv.Key, out var e) || e.Generation != kv.Value.Generation))
                         .Select(kv => kv.Key).ToList())
            {
                _resident[name].Dispose();
                _resident.Remove(name);
            }
    }

    private sealed class SlotRelease(GatheredLoraPool pool, GatheredLoraAdapter slot) : IDisposable
    {
        public void Dispose() => pool.Remove(slot);
    }

    public void Dispose()
    {
        lock (_residentLock)
        {
            foreach (var r in _resident.Values) r.Dispose();
            _resident.Clear();
        }
    }
}
