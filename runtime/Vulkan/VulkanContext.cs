// The root of everything on the device: instance, chosen physical device, logical device, queue, memory arena,
// pipeline cache and command recorder. Children register with it; disposing it frees whatever is still alive.
using System.Runtime.InteropServices;
using Silk.NET.Core;
using Silk.NET.Core.Native;
using Silk.NET.Vulkan;
using VkBuffer = Silk.NET.Vulkan.Buffer;
using VkPeft.Runtime.Commands;
using VkPeft.Runtime.Kernels;
using VkPeft.Runtime.Memory;

namespace VkPeft.Runtime.Vulkan;

/// <summary>One physical device as enumerated, before any is chosen.</summary>
public sealed record PhysicalDeviceSummary(int Index, string Name, DeviceKind Kind, string ApiVersion);

public sealed unsafe class VulkanContext : DisposableObject
{
    private const string ValidationLayerName = "VK_LAYER_KHRONOS_validation";
    private readonly List<WeakReference<IDisposable>> _children = [];
    private readonly object _childLock = new();
    private DebugUtilsMessengerEXT _messenger;
    private delegate* unmanaged[Cdecl]<Instance, DebugUtilsMessengerEXT, AllocationCallbacks*, void> _destroyMessenger;

    public Vk Vk { get; }
    public Instance Instance { get; }
    public PhysicalDevice PhysicalDevice { get; }
    public Device Device { get; }
    public Queue Queue { get; }
    public uint QueueFamily { get; }
    public DeviceCapabilities Caps { get; }
    public RuntimeOptions Options { get; }
    public ValidationLog? Validation { get; }
    public IReadOnlyList<PhysicalDeviceSummary> AllDevices { get; }
    public int DeviceIndex { get; }
    public DeviceArena Arena { get; }
    private DeviceArena? _hostArena;
    private readonly object _hostArenaLock = new();

    /// <summary>
    /// Host memory for state offloaded from the device (layer inputs under checkpointing, optimizer moments): the GPU
    /// reads and writes it over the bus; its bytes are accounted apart from the device's. Created on first use.
    /// </summary>
    public DeviceArena HostArena
    {
        get
        {
            lock (_hostArenaLock) return _hostArena ??= new DeviceArena(this, MemoryPlace.Host);
        }
    }

    /// <summary>The arena of <paramref name="place"/>.</summary>
    public DeviceArena ArenaFor(MemoryPlace place) => place == MemoryPlace.Host ? HostArena : Arena;
    public ComputePipelineCache Pipelines { get; }
    public CommandRecorder Commands { get; }
    /// <summary>Which fast kernel variants this device uses (self-checked on first use; see Kernels/KernelPaths.cs).</summary>
    public KernelPaths Kernels { get; }
    public bool ValidationEnabled => Validation != null;

    /// <summary>Creates a context with options from the environment (VKPEFT_DEVICE, VKPEFT_VALIDATION, ...).</summary>
    public static VulkanContext Create() => new(RuntimeOptions.FromEnvironment());

    public VulkanContext(RuntimeOptions options)
    {
        Options = options;
        Vk = Vk.GetApi();
        bool validation = options.Validation;
        if (validation && !LayerAvailable(Vk, ValidationLayerName))
            throw new VulkanUnsupportedException(
                $"the Khronos validation layer ({ValidationLayerName}) is not installed; install it with 'apt-get install vulkan-validationlayers'");
        var instanceExtensions = EnumerateInstanceExtensions(Vk);
        bool debugUtils = validation && instanceExtensions.Contains("VK_EXT_debug_utils");
        bool portability = instanceExtensions.Contains("VK_KHR_portability_enumeration");

        Instance = CreateInstance(validation, debugUtils, portability);
        try
        {
            if (debugUtils)
            {
                Validation = new ValidationLog();
                CreateMessenger(Validation);
            }

            var devices = EnumeratePhysicalDevices();
            if (devices.Length == 0)
                throw new VulkanUnsupportedException(
                    "no Vulkan device found. Install a driver: 'apt-get install mesa-vulkan-drivers' gives the CPU device lavapipe.");
            var summaries = devices.Select((d, i) => Summarize(d, i)).ToArray();
            AllDevices = summaries;
            DeviceIndex = ChooseDevice(summaries, options.Device ?? Environment.GetEnvironmentVariable("VKPEFT_DEVICE"));
            PhysicalDevice = devices[DeviceIndex];

            QueueFamily = FindComputeQueueFamily(out bool timestampBits);
            (Device, var enabled) = CreateLogicalDevice();
            Queue q;
            Vk.GetDeviceQueue(Device, QueueFamily, 0, &q);
            Queue = q;
            Caps = QueryCapabilities(enabled, timestampBits);
            if (options.MaxStorageBufferRange is { } msr) Caps = Caps with { MaxStorageBufferRange = Math.Min(msr, Caps.MaxStorageBufferRange) };
            if (options.MaxMemoryAllocationSize is { } mma) Caps = Caps with { MaxMemoryAllocationSize = Math.Min(mma, Caps.MaxMemoryAllocationSize) };
            if (options.DisableSubgroupOps) Caps = Caps with { SubgroupArithmetic = false, SubgroupShuffle = false, SubgroupBallot = false };

            Arena = new DeviceArena(this);
            Pipelines = new ComputePipelineCache(this);
            Commands = new CommandRecorder(this);
            Kernels = new KernelPaths(this, options.SafeKernels, options.Warn ?? (line => Console.Error.WriteLine("vkpeft: warning: " + line)));
        }
        catch
        {
            DisposeCore();
            throw;
        }
    }

    /// <summary>Registers a child so that disposing the context disposes it too (held weakly).</summary>
    public void Register(IDisposable child)
    {
        lock (_childLock)
        {
            if (_children.Count > 256 && _children.Count % 256 == 0) _children.RemoveAll(w => !w.TryGetTarget(out _));
            _children.Add(new WeakReference<IDisposable>(child));
        }
    }

    /// <summary>Submits recorded work, waits for it, and fails on validation messages.</summary>
    public void Sync() => Commands.Sync();

    /// <summary>Throws if the validation layer reported anything since the last check (when ThrowOnValidation is on).</summary>
    public void CheckValidation()
    {
        if (Validation == null || !Options.ThrowOnValidation) return;
        var messages = Validation.Drain();
        if (messages.Length > 0) throw new ValidationFailedException(messages);
    }

    protected override void DisposeCore()
    {
        List<IDisposable> alive = [];
        lock (_childLock)
        {
            foreach (var w in _children)
                if (w.TryGetTarget(out var c)) alive.Add(c);
            _children.Clear();
        }
        if (Device.Handle != 0) Vk.DeviceWaitIdle(Device);
        for (int i = alive.Count - 1; i >= 0; i--) alive[i].Dispose();
        Commands?.Dispose();
        Pipelines?.Dispose();
        _hostArena?.Dispose();
        Arena?.Dispose();
        if (Device.Handle != 0) Vk.DestroyDevice(Device, null);
        if (_messenger.Handle != 0 && _destroyMessenger != null) _destroyMessenger(Instance, _messenger, null);
        Validation?.Unregister();
        if (Instance.Handle != 0) Vk.DestroyInstance(Instance, null);
        Vk.Dispose();
    }

    /// <summary>Lists the Vulkan devices present without creating a context.</summary>
    public static bool LayerAvailable(Vk vk, string name)
    {
        uint count = 0;
        vk.EnumerateInstanceLayerProperties(&count, null);
        var props = new LayerProperties[count];
        fixed (LayerProperties* p = props) vk.EnumerateInstanceLayerProperties(&count, p);
        foreach (var lp in props)
            if (SilkMarshal.PtrToString((nint)lp.LayerName) == name) return true;
        return false;
    }

    private static HashSet<string> EnumerateInstanceExtensions(Vk vk)
    {
        uint count = 0;
        vk.EnumerateInstanceExtensionProperties((byte*)null, &count, null);
        var props = new ExtensionProperties[count];
        fixed (ExtensionProperties* p = props) vk.EnumerateInstanceExtensionProperties((byte*)null, &count, p);
        return props.Select(e => SilkMarshal.PtrToString((nint)e.ExtensionName) ?? "").ToHashSet();
    }

    private Instance CreateInstance(bool validation, bool debugUtils, bool portability)
    {
        var appName = SilkMarshal.StringToPtr("vkpeft");
        var layers = SilkMarshal.StringArrayToPtr(validation ? [ValidationLayerName] : Array.Empty<string>());
        var extList = new List<string>();
        if (debugUtils) extList.Add("VK_EXT_debug_utils");
        if (portability) extList.Add("VK_KHR_portability_enumeration");
        var exts = SilkMarshal.StringArrayToPtr(extList);
        try
        {
            var app = new ApplicationInfo
            {
                SType = StructureType.ApplicationInfo,
                PApplicationName = (byte*)appName,
                ApplicationVersion = new Version32(0, 1, 0),
                PEngineName = (byte*)appName,
                EngineVersion = new Version32(0, 1, 0),
                ApiVersion = Vk.Version12,
            };
            var info = new InstanceCreateInfo
            {
                SType = StructureType.InstanceCreateInfo,
                PApplicationInfo = &app,
                EnabledLayerCount = validation ? 1u : 0u,
                PpEnabledLayerNames = (byte**)layers,
                EnabledExtensionCount = (uint)extList.Count,
                PpEnabledExtensionNames = (byte**)exts,
                Flags = portability ? InstanceCreateFlags.EnumeratePortabilityBitKhr : 0,
            };
            Instance instance;
            var r = Vk.CreateInstance(&info, null, &instance);
            if (r == Result.ErrorIncompatibleDriver)
                throw new VulkanUnsupportedException(
                    "no Vulkan 1.2 driver found. Install one: 'apt-get install libvulkan1 mesa-vulkan-drivers' gives the CPU device lavapipe.");
            VkCheck.Ok(r, "creating the Vulkan instance");
            return instance;
        }
        finally
        {
            SilkMarshal.Free(appName);
            SilkMarshal.Free(layers);
            SilkMarshal.Free(exts);
        }
    }

    private void CreateMessenger(ValidationLog log)
    {
        var createName = SilkMarshal.StringToPtr("vkCreateDebugUtilsMessengerEXT");
        var destroyName = SilkMarshal.StringToPtr("vkDestroyDebugUtilsMessengerEXT");
        try
        {
            var create = (delegate* unmanaged[Cdecl]<Instance, DebugUtilsMessengerCreateInfoEXT*, AllocationCallbacks*, DebugUtilsMessengerEXT*, Result>)
                (void*)Vk.GetInstanceProcAddr(Instance, (byte*)createName);
            _destroyMessenger = (delegate* unmanaged[Cdecl]<Instance, DebugUtilsMessengerEXT, AllocationCallbacks*, void>)
                (void*)Vk.GetInstanceProcAddr(Instance, (byte*)destroyName);
            if (create == null) throw new VulkanUnsupportedException("vkCreateDebugUtilsMessengerEXT is not available");
            var info = new DebugUtilsMessengerCreateInfoEXT
            {
                SType = StructureType.DebugUtilsMessengerCreateInfoExt,
                MessageSeverity = DebugUtilsMessageSeverityFlagsEXT.WarningBitExt | DebugUtilsMessageSeverityFlagsEXT.ErrorBitExt,
                MessageType = DebugUtilsMessageTypeFlagsEXT.GeneralBitExt | DebugUtilsMessageTypeFlagsEXT.ValidationBitExt
                              | DebugUtilsMessageTypeFlagsEXT.PerformanceBitExt,
                PfnUserCallback = ValidationLog.CallbackPointer,
                PUserData = (void*)log.Id,
            };
            DebugUtilsMessengerEXT m;
            VkCheck.Ok(create(Instance, &info, null, &m), "creating the validation message callback");
            _messenger = m;
        }
        finally
        {
            SilkMarshal.Free(createName);
            SilkMarshal.Free(destroyName);
        }
    }

    private PhysicalDevice[] EnumeratePhysicalDevices()
    {
        uint count = 0;
        VkCheck.Ok(Vk.EnumeratePhysicalDevices(Instance, &count, null), "enumerating physical devices");
        var devices = new PhysicalDevice[count];
        fixed (PhysicalDevice* p = devices) VkCheck.Ok(Vk.EnumeratePhysicalDevices(Instance, &count, p), "enumerating physical devices");
        return devices;
    }

    private PhysicalDeviceSummary Summarize(PhysicalDevice device, int index)
    {
        PhysicalDeviceProperties props;
        Vk.GetPhysicalDeviceProperties(device, &props);
        return new PhysicalDeviceSummary(index, SilkMarshal.PtrToString((nint)props.DeviceName) ?? "?", KindOf(props.DeviceType), VersionString(props.ApiVersion));
    }

    private static DeviceKind KindOf(PhysicalDeviceType t) => t switch
    {
        PhysicalDeviceType.DiscreteGpu => DeviceKind.DiscreteGpu,
        PhysicalDeviceType.IntegratedGpu => DeviceKind.IntegratedGpu,
        PhysicalDeviceType.VirtualGpu => DeviceKind.VirtualGpu,
        PhysicalDeviceType.Cpu => DeviceKind.Cpu,
        _ => DeviceKind.Other,
    };

    private static string VersionString(uint v) => $"{v >> 22}.{(v >> 12) & 0x3ff}.{v & 0xfff}";

    private static string Present(IReadOnlyList<PhysicalDeviceSummary> devices) => string.Join(", ", devices.Select(d => $"{d.Index}: {d.Name}"));

    /// <summary>Picks a device: the selector (index or name substring) when given, else discrete &gt; integrated &gt; virtual &gt; CPU.</summary>
    public static int ChooseDevice(IReadOnlyList<PhysicalDeviceSummary> devices, string? selector)
    {
        if (!string.IsNullOrWhiteSpace(selector))
        {
            if (int.TryParse(selector, out int idx))
            {
                if (idx < 0 || idx >= devices.Count)
                    throw new VulkanUnsupportedException(new SettingMessage($"{RuntimeSettings.Device} {idx}: there are {devices.Count} device(s): {Present(devices)}"));
                return idx;
            }
            var match = devices.FirstOrDefault(d => d.Name.Contains(selector, StringComparison.OrdinalIgnoreCase));
            if (match == null)
                throw new VulkanUnsupportedException(new SettingMessage($"{RuntimeSettings.Device} '{selector}' matches no device; present: {Present(devices)}"));
            return match.Index;
        }
        static int Rank(DeviceKind k) => k switch
        {
            DeviceKind.DiscreteGpu => 0, DeviceKind.IntegratedGpu => 1, DeviceKind.VirtualGpu => 2, DeviceKind.Cpu => 3, _ => 4,
        };
        return devices.OrderBy(d => Rank(d.Kind)).ThenBy(d => d.Index).First().Index;
    }

    private uint FindComputeQueueFamily(out bool timestamps)
    {
        uint count = 0;
        Vk.GetPhysicalDeviceQueueFamilyProperties(PhysicalDevice, &count, null);
        var fams = new QueueFamilyProperties[count];
        fixed (QueueFamilyProperties* p = fams) Vk.GetPhysicalDeviceQueueFamilyProperties(PhysicalDevice, &count, p);
        // Prefer a family with compute; among those, one that also has timestamps.
        int best = -1;
        for (int i = 0; i < fams.Length; i++)
        {
            if ((fams[i].QueueFlags & QueueFlags.ComputeBit) == 0) continue;
            if (best < 0 || (fams[best].TimestampValidBits == 0 && fams[i].TimestampValidBits > 0)) best = i;
        }
        if (best < 0) throw new VulkanUnsupportedException("the device has no compute queue");
        timestamps = fams[best].TimestampValidBits > 0;
        return (uint)best;
    }

    private sealed record EnabledFeatures(bool Float16, bool Int8, bool Storage8, bool Storage16, bool Bda, bool MemoryBudget, bool CoopMatrixNV);

    private (Device, EnabledFeatures) CreateLogicalDevice()
    {
        var f11 = new PhysicalDeviceVulkan11Features { SType = StructureType.PhysicalDeviceVulkan11Features };
        var f12 = new PhysicalDeviceVulkan12Features { SType = StructureType.PhysicalDeviceVulkan12Features, PNext = &f11 };
        var f2 = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = &f12 };
        Vk.GetPhysicalDeviceFeatures2(PhysicalDevice, &f2);

        uint extCount = 0;
        Vk.EnumerateDeviceExtensionProperties(PhysicalDevice, (byte*)null, &extCount, null);
        var extProps = new ExtensionProperties[extCount];
        fixed (ExtensionProperties* p = extProps) Vk.EnumerateDeviceExtensionProperties(PhysicalDevice, (byte*)null, &extCount, p);
        var deviceExts = extProps.Select(e => SilkMarshal.PtrToString((nint)e.ExtensionName) ?? "").ToHashSet();
        var enable = new List<string>();
        bool budget = deviceExts.Contains("VK_EXT_memory_budget");
        if (budget) enable.Add("VK_EXT_memory_budget");
        if (deviceExts.Contains("VK_KHR_portability_subset")) enable.Add("VK_KHR_portability_subset");
        // NVIDIA cooperative matrices: the extension and its feature, when the device offers both.
        var coopQuery = new PhysicalDeviceCooperativeMatrixFeaturesNV { SType = StructureType.PhysicalDeviceCooperativeMatrixFeaturesNV };
        bool coop = false;
        if (deviceExts.Contains("VK_NV_cooperative_matrix"))
        {
            var q2 = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = &coopQuery };
            Vk.GetPhysicalDeviceFeatures2(PhysicalDevice, &q2);
            coop = coopQuery.CooperativeMatrix;
            if (coop) enable.Add("VK_NV_cooperative_matrix");
        }
        var coopEnable = new PhysicalDeviceCooperativeMatrixFeaturesNV { SType = StructureType.PhysicalDeviceCooperativeMatrixFeaturesNV, CooperativeMatrix = true };

        var e11 = new PhysicalDeviceVulkan11Features
        {
            SType = StructureType.PhysicalDeviceVulkan11Features,
            StorageBuffer16BitAccess = f11.StorageBuffer16BitAccess,
        };
        var e12 = new PhysicalDeviceVulkan12Features
        {
            SType = StructureType.PhysicalDeviceVulkan12Features,
            PNext = &e11,
            ShaderFloat16 = f12.ShaderFloat16,
            ShaderInt8 = f12.ShaderInt8,
            StorageBuffer8BitAccess = f12.StorageBuffer8BitAccess,
            BufferDeviceAddress = f12.BufferDeviceAddress,
        };
        var baseFeatures = new PhysicalDeviceFeatures { ShaderInt64 = f2.Features.ShaderInt64 };
        if (coop) e11.PNext = &coopEnable;
        var e2 = new PhysicalDeviceFeatures2 { SType = StructureType.PhysicalDeviceFeatures2, PNext = &e12, Features = baseFeatures };

        float priority = 1f;
        var queueInfo = new DeviceQueueCreateInfo
        {
            SType = StructureType.DeviceQueueCreateInfo,
            QueueFamilyIndex = QueueFamily,
            QueueCount = 1,
            PQueuePriorities = &priority,
        };
        var exts = SilkMarshal.StringArrayToPtr(enable);
        try
        {
            var info = new DeviceCreateInfo
            {
                SType = StructureType.DeviceCreateInfo,
                PNext = &e2,
                QueueCreateInfoCount = 1,
                PQueueCreateInfos = &queueInfo,
                EnabledExtensionCount = (uint)enable.Count,
                PpEnabledExtensionNames = (byte**)exts,
            };
            Device device;
            VkCheck.Ok(Vk.CreateDevice(PhysicalDevice, &info, null, &device), "creating the logical device");
            return (device, new EnabledFeatures(f12.ShaderFloat16, f12.ShaderInt8, f12.StorageBuffer8BitAccess,
                f11.StorageBuffer16BitAccess, f12.BufferDeviceAddress, budget, coop));
        }
        finally
        {
            SilkMarshal.Free(exts);
        }
    }

    private DeviceCapabilities QueryCapabilities(EnabledFeatures enabled, bool timestampBits)
    {
        var subgroup = new PhysicalDeviceSubgroupProperties { SType = StructureType.PhysicalDeviceSubgroupProperties };
        var driver = new PhysicalDeviceDriverProperties { SType = StructureType.PhysicalDeviceDriverProperties, PNext = &subgroup };
        var maint3 = new PhysicalDeviceMaintenance3Properties { SType = StructureType.PhysicalDeviceMaintenance3Properties, PNext = &driver };
        var p2 = new PhysicalDeviceProperties2 { SType = StructureType.PhysicalDeviceProperties2, PNext = &maint3 };
        Vk.GetPhysicalDeviceProperties2(PhysicalDevice, &p2);
        var props = p2.Properties;
        var limits = props.Limits;
        ulong maxBufferSize = ulong.MaxValue;
        // maxBufferSize is core in Vulkan 1.3 (maintenance4); absent here, allocation size bounds buffers.
        maxBufferSize = Math.Min(maxBufferSize, maint3.MaxMemoryAllocationSize);

        var heaps = QueryHeaps(enabled.MemoryBudget, out bool unified);
        bool computeSubgroup = (subgroup.SupportedStages & ShaderStageFlags.ComputeBit) != 0;
        return new DeviceCapabilities
        {
            Name = SilkMarshal.PtrToString((nint)props.DeviceName) ?? "?",
            Kind = KindOf(props.DeviceType),
            VendorId = props.VendorID,
            DeviceId = props.DeviceID,
            ApiVersion = VersionString(props.ApiVersion),
            DriverName = SilkMarshal.PtrToString((nint)driver.DriverName) ?? "",
            DriverInfo = SilkMarshal.PtrToString((nint)driver.DriverInfo) ?? "",
            MaxStorageBufferRange = limits.MaxStorageBufferRange,
            MaxMemoryAllocationSize = maint3.MaxMemoryAllocationSize,
            MaxBufferSize = maxBufferSize,
            MaxComputeWorkGroupCount = [limits.MaxComputeWorkGroupCount[0], limits.MaxComputeWorkGroupCount[1], limits.MaxComputeWorkGroupCount[2]],
            MaxComputeWorkGroupSize = [limits.MaxComputeWorkGroupSize[0], limits.MaxComputeWorkGroupSize[1], limits.MaxComputeWorkGroupSize[2]],
            MaxComputeWorkGroupInvocations = limits.MaxComputeWorkGroupInvocations,
            MaxComputeSharedMemorySize = limits.MaxComputeSharedMemorySize,
            MinStorageBufferOffsetAlignment = limits.MinStorageBufferOffsetAlignment,
            MaxPushConstantsSize = limits.MaxPushConstantsSize,
            MaxPerStageStorageBuffers = limits.MaxPerStageDescriptorStorageBuffers,
            SubgroupSize = subgroup.SubgroupSize,
            SubgroupArithmetic = computeSubgroup && (subgroup.SupportedOperations & SubgroupFeatureFlags.ArithmeticBit) != 0,
            SubgroupShuffle = computeSubgroup && (subgroup.SupportedOperations & SubgroupFeatureFlags.ShuffleBit) != 0,
            SubgroupBallot = computeSubgroup && (subgroup.SupportedOperations & SubgroupFeatureFlags.BallotBit) != 0,
            ShaderFloat16 = enabled.Float16,
            ShaderInt8 = enabled.Int8,
            StorageBuffer8Bit = enabled.Storage8,
            StorageBuffer16Bit = enabled.Storage16,
            BufferDeviceAddress = enabled.Bda,
            TimestampsSupported = timestampBits && limits.TimestampComputeAndGraphics,
            TimestampPeriodNs = limits.TimestampPeriod,
            MemoryBudgetExtension = enabled.MemoryBudget,
            UnifiedMemory = unified && !Options.DisableHostMappedMemory,
            Heaps = heaps,
            CooperativeMatricesNV = enabled.CoopMatrixNV ? QueryCooperativeMatricesNV() : [],
        };
    }

    /// <summary>The matrix shapes and types vkGetPhysicalDeviceCooperativeMatrixPropertiesNV lists for this device.</summary>
    private CooperativeMatrixShape[] QueryCooperativeMatricesNV()
    {
        var pfn = Vk.GetInstanceProcAddr(Instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
        var fn = (delegate* unmanaged<PhysicalDevice, uint*, CooperativeMatrixPropertiesNV*, Result>)(void*)pfn.Handle;
        if (fn == null) return [];
        uint count = 0;
        if (fn(PhysicalDevice, &count, null) != Result.Success || count == 0) return [];
        var props = new CooperativeMatrixPropertiesNV[count];
        for (int i = 0; i < props.Length; i++) props[i].SType = StructureType.CooperativeMatrixPropertiesNV;
        fixed (CooperativeMatrixPropertiesNV* p = props)
            if (fn(PhysicalDevice, &count, p) != Result.Success) return [];
        return props.Take((int)count).Select(p => new CooperativeMatrixShape(p.MSize, p.NSize, p.KSize,
            p.AType.ToString(), p.BType.ToString(), p.CType.ToString(), p.DType.ToString(), p.Scope.ToString())).ToArray();
    }

    /// <summary>Current heap sizes, and budget/usage when VK_EXT_memory_budget is enabled.</summary>
    public MemoryHeapInfo[] QueryHeaps() => QueryHeaps(Caps.MemoryBudgetExtension, out _);

    private MemoryHeapInfo[] QueryHeaps(bool budgetExt, out bool unified)
    {
        var budget = new PhysicalDeviceMemoryBudgetPropertiesEXT { SType = StructureType.PhysicalDeviceMemoryBudgetPropertiesExt };
        var mp2 = new PhysicalDeviceMemoryProperties2 { SType = StructureType.PhysicalDeviceMemoryProperties2, PNext = budgetExt ? &budget : null };
        Vk.GetPhysicalDeviceMemoryProperties2(PhysicalDevice, &mp2);
        var mp = mp2.MemoryProperties;
        var heaps = new MemoryHeapInfo[mp.MemoryHeapCount];
        for (int i = 0; i < heaps.Length; i++)
        {
            var h = mp.MemoryHeaps[i];
            heaps[i] = new MemoryHeapInfo(i, h.Size, (h.Flags & MemoryHeapFlags.DeviceLocalBit) != 0,
                budgetExt ? budget.HeapBudget[i] : null, budgetExt ? budget.HeapUsage[i] : null);
        }
        // Unified: the largest device-local heap is also host-visible through some memory type.
        unified = false;
        int bigHeap = -1;
        for (int i = 0; i < heaps.Length; i++)
            if (heaps[i].DeviceLocal && (bigHeap < 0 || heaps[i].Size > heaps[bigHeap].Size)) bigHeap = i;
        for (int t = 0; t < mp.MemoryTypeCount; t++)
        {
            var mt = mp.MemoryTypes[t];
            const MemoryPropertyFlags want = MemoryPropertyFlags.DeviceLocalBit | MemoryPropertyFlags.HostVisibleBit | MemoryPropertyFlags.HostCoherentBit;
            if ((mt.PropertyFlags & want) == want && (int)mt.HeapIndex == bigHeap) unified = true;
        }
        return heaps;
    }

    /// <summary>Finds a memory type index with all of <paramref name="required"/> among <paramref name="typeBits"/>, or -1.</summary>
    public int FindMemoryType(uint typeBits, MemoryPropertyFlags required, MemoryPropertyFlags excluded = 0)
    {
        PhysicalDeviceMemoryProperties mp;
        Vk.GetPhysicalDeviceMemoryProperties(PhysicalDevice, &mp);
        for (int i = 0; i < mp.MemoryTypeCount; i++)
            if ((typeBits & (1u << i)) != 0 && (mp.MemoryTypes[i].PropertyFlags & required) == required
                && (mp.MemoryTypes[i].PropertyFlags & excluded) == 0) return i;
        return -1;
    }

    internal VkBuffer CreateRawBuffer(ulong size, BufferUsageFlags usage, string what)
    {
        var info = new BufferCreateInfo
        {
            SType = StructureType.BufferCreateInfo,
            Size = size,
            Usage = usage,
            SharingMode = SharingMode.Exclusive,
        };
        VkBuffer b;
        VkCheck.Ok(Vk.CreateBuffer(Device, &info, null, &b), what);
        return b;
    }
}
