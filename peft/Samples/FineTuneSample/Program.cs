// Sample: fine-tunes stories260K with QLoRA (NF4 + double-quantized base, LoRA r=8) for a few steps through the public
// library API, then exports the adapter in Hugging Face PEFT's format.
// Usage: FineTuneSample [stories260K.bin] [steps] [out-dir]. Without a path: VKPEFT_DEMO_MODEL, ../shared/models/
// stories260K beside the repository, or the cache where `vkpeft demo` downloads it.
using VkPeft.Peft.Engine;
using VkPeft.Peft.Export;
using VkPeft.Peft.Methods;
using VkPeft.Peft.Methods.Lora;
using VkPeft.Peft.Models;
using VkPeft.Peft.Training;
using VkPeft.Runtime.Vulkan;

string modelPath = args.Length > 0 ? args[0] : LocateStories260K();
int steps = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 10;
string outDir = args.Length > 2 ? args[2] : Path.Combine(Path.GetTempPath(), "vkpeft-sample");
if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);

var host = ModelLoader.Load(modelPath);                       // llama2.c, GGUF or HF folder; tok512.bin found beside it
var tokenizer = host.Tokenizer ?? throw new FileNotFoundException($"no tokenizer next to {modelPath}");
var quant = BaseQuant.Parse("nf4-dq");
var options = new TrainOptions
{
    Data = Path.Combine(AppContext.BaseDirectory, "sharing_stories.txt"),
    Adapter = new AdapterConfig { Method = PeftMethod.Lora, Settings = new LoraSettings { Rank = 8, Alpha = 16 }, BaseQuant = quant, BaseModel = modelPath },
    Quant = quant, Steps = steps, Batch = 8, SeqLen = 64, Lr = 2e-3f, Out = Path.Combine(outDir, "run"),
};
var data = TrainingData.Load(tokenizer, options.Data, null, options.EvalFraction, options.SeqLen, options.Seed);

using (var ctx = new VulkanContext(new RuntimeOptions()))
using (var model = DeviceLlama.Load(ctx, host.Config, host.Weights, quant))
using (var trainer = new Trainer(ctx, model, options, data))
{
    Console.WriteLine($"device: {ctx.Caps.Name}");
    var summary = trainer.Run(r => Console.WriteLine($"step {r.Step}: loss {r.Loss:F4}"));
    Console.WriteLine($"held-out loss {summary.InitialEvalLoss:F4} -> {summary.EvalLoss:F4}");
}

var adapter = AdapterIO.Load(options.Out, host.Config);       // the trained adapter, as the trainer saved it
var report = Exporter.Export(host, adapter, new ExportOptions { Format = ExportFormat.Peft, OutPath = Path.Combine(outDir, "peft") });
Console.WriteLine($"exported: {report.OutPath}");
return 0;

static string LocateStories260K()
{
    if (Environment.GetEnvironmentVariable("VKPEFT_DEMO_MODEL") is { Length: > 0 } env) return env;
    var cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir?.Parent != null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln"))
            && Path.Combine(dir.Parent.FullName, "shared", "models", "stories260K", "stories260K.bin") is var shared && File.Exists(shared))
            return shared;
    return Path.Combine(cache, "vkpeft", "stories260K", "stories260K.bin");
}
