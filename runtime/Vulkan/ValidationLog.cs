// Collects messages from the Khronos validation layer (VK_EXT_debug_utils) so tests can fail on any of them.
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Silk.NET.Vulkan;

namespace VkPeft.Runtime.Vulkan;

public sealed unsafe class ValidationLog
{
    private static readonly ConcurrentDictionary<nint, ValidationLog> Logs = new();
    private static long _nextId;
    private readonly ConcurrentQueue<string> _messages = new();

    internal ValidationLog() { Id = (nint)Interlocked.Increment(ref _nextId); Logs[Id] = this; }

    internal nint Id { get; }

    /// <summary>Every warning or error the layer reported since the last <see cref="Drain"/>.</summary>
    public IReadOnlyCollection<string> Pending => _messages.ToArray();

    /// <summary>Total messages seen over the context's life.</summary>
    public int Total { get; private set; }

    public string[] Drain()
    {
        var list = new List<string>();
        while (_messages.TryDequeue(out var m)) list.Add(m);
        return list.ToArray();
    }

    internal void Unregister() => Logs.TryRemove(Id, out _);

    internal static PfnDebugUtilsMessengerCallbackEXT CallbackPointer =>
        new((delegate* unmanaged[Cdecl]<DebugUtilsMessageSeverityFlagsEXT, DebugUtilsMessageTypeFlagsEXT, DebugUtilsMessengerCallbackDataEXT*, void*, Silk.NET.Core.Bool32>)
            (delegate* unmanaged[Cdecl]<DebugUtilsMessageSeverityFlagsEXT, DebugUtilsMessageTypeFlagsEXT, DebugUtilsMessengerCallbackDataEXT*, void*, uint>)&Callback);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static uint Callback(DebugUtilsMessageSeverityFlagsEXT severity, DebugUtilsMessageTypeFlagsEXT type,
        DebugUtilsMessengerCallbackDataEXT* data, void* user)
    {
        if (severity < DebugUtilsMessageSeverityFlagsEXT.WarningBitExt) return 0;
        if (Logs.TryGetValue((nint)user, out var log))
        {
            var text = data->PMessage == null ? "(no message)" : Marshal.PtrToStringUTF8((nint)data->PMessage) ?? "";
            log._messages.Enqueue($"[{severity}] [{type}] {text}");
            log.Total++;
        }
        return 0;
    }
}

/// <summary>The validation layer reported something; the message lists what.</summary>
public sealed class ValidationFailedException : VulkanException
{
    public ValidationFailedException(string[] messages)
        : base($"Vulkan validation layer reported {messages.Length} message(s):\n" + string.Join("\n", messages.Take(20))) { Messages = messages; }

    public string[] Messages { get; }
}
