// A base model on the device, with a trained adapter attached when --adapter is given (its recorded base quantization
// is used unless --quant says otherwise, which earns a warning).
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

namespace VkPeft.Cli;

public sealed class AdapterSession : IDisposable
{
    private readonly TrainableParameters? _params;
    private readonly ITrainableAdapter? _lora;

    private AdapterSession(DeviceLlama model, TrainableParameters? p, ITrainableAdapter? lora)
    {
        Model = model;
        _params = p;
        _lora = lora;
    }

    public DeviceLlama Model { get; }
    public IAdapterRuntime? Adapter => _lora;

    public static AdapterSession Open(VulkanContext ctx, string? adapterDir, LoadedModel host, BaseQuant quant, bool quantGiven, int maxRows,
        BaseQuant? embeddingQuant = null)
    {
        if (adapterDir == null) return new AdapterSession(ModelOptions.Upload(ctx, host, quant, embeddingQuant), null, null);
        if (!Directory.Exists(adapterDir)) throw new DirectoryNotFoundException($"--adapter: '{adapterDir}' is not a directory");
        var adapter = AdapterIO.Load(adapterDir, host.Config);
        var recorded = adapter.Config.BaseQuant;
        if (quantGiven && quant != recorded)
            Console.Error.WriteLine($"warning: the adapter was trained against a {recorded} base; using --quant {quant} as asked");
        var q = quantGiven ? quant : recorded;
        var model = ModelOptions.Upload(ctx, host, q, embeddingQuant);
        var p = new TrainableParameters(ctx, withOptimizer: false);
        foreach (var (name, t) in adapter.Tensors) p.Add(name, t.Shape, t.Data);
        var lora = adapter.Config.Method.CreateRuntime(ctx, host.Config, adapter.Config, p, maxRows);
        lora.Training = false;
        return new AdapterSession(model, p, lora);
    }

    public void Dispose()
    {
        (_lora as IDisposable)?.Dispose();
        _params?.Dispose();
        Model.Dispose();
    }
}
