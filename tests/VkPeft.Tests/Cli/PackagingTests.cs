// vkpeft as others consume it: `dotnet pack` of the built projects gives NuGet packages of the three libraries (README,
// XML docs, the embedded SPIR-V, the Apache-2.0 license expression) and the vkpeft .NET tool (licensed alike), which
// installs into a tool path from a local source and runs; the fine-tune-and-export sample runs through the public API.
using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Cli;

public sealed class PackagingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vkpeft-pack-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The repository root (holds Runtime.sln) above the test binaries.</summary>
    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Runtime.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no Runtime.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>The build configuration the tests were built in (bin/CONFIG/net10.0): the packed projects share it.</summary>
    private static string Configuration() => new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;

    private static (int Code, string Output) Run(string file, string workDir, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // The test host runs under `dotnet test`; its MSBuild variables must not leak into a nested pack.
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList())
            psi.Environment.Remove(key);
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(entireProcessTree: true); throw new TimeoutException($"{file} {string.Join(' ', args)}"); }
        return (p.ExitCode, stdout + stderr.Result);
    }

    private static string Nuspec(ZipArchive zip) =>
        new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open()).ReadToEnd();

    [Fact]
    public void PackedToolInstallsIntoAToolPathAndRunsAndTheLibraryPackagesCarryDocsAndShaders()
    {
        var root = RepoRoot();
        var pkgs = Path.Combine(_dir, "pkgs");
        // --no-build packs the binaries this test run was built from; the nuspecs go to the temp folder, so nothing in
        // the source tree's bin/obj is written.
        foreach (var project in new[] { "quant/VkPeft.Quant.csproj", "runtime/VkPeft.Runtime.csproj", "peft/Peft/VkPeft.Peft.csproj", "peft/Cli/VkPeft.Cli.csproj" })
        {
            var (code, output) = Run("dotnet", root, "pack", Path.Combine(root, project), "-c", Configuration(), "--no-build", "-o", pkgs,
                $"-p:NuspecOutputPath={Path.Combine(_dir, "nuspec")}{Path.DirectorySeparatorChar}", "-nologo");
            Assert.True(code == 0, $"dotnet pack {project}:\n{output}");
        }

        foreach (var id in new[] { "VkPeft.Quant", "VkPeft.Runtime", "VkPeft.Peft" })
        {
            using var zip = ZipFile.OpenRead(Directory.GetFiles(pkgs, $"{id}.*.nupkg").Single());
            var nuspec = Nuspec(zip);
            Assert.Contains("<readme>README.md</readme>", nuspec);
            Assert.Contains("<repository type=\"git\"", nuspec);
            Assert.Contains("<license type=\"expression\">Apache-2.0</license>", nuspec);
            Assert.NotNull(zip.GetEntry("README.md"));
            Assert.NotNull(zip.GetEntry($"lib/net10.0/{id}.dll"));
            Assert.NotNull(zip.GetEntry($"lib/net10.0/{id}.xml"));
        }
        using (var runtime = ZipFile.OpenRead(Directory.GetFiles(pkgs, "VkPeft.Runtime.*.nupkg").Single()))
        {
            // The kernels are SPIR-V resources inside the runtime assembly (ShaderLibrary loads them from there).
            using var dll = new MemoryStream();
            runtime.GetEntry("lib/net10.0/VkPeft.Runtime.dll")!.Open().CopyTo(dll);
            Assert.Contains("vkpeft.spirv.matmul", Encoding.ASCII.GetString(dll.ToArray()), StringComparison.Ordinal);
        }
        using (var tool = ZipFile.OpenRead(Directory.GetFiles(pkgs, "vkpeft.*.nupkg").Single()))
        {
            Assert.Contains("<packageType name=\"DotnetTool\"", Nuspec(tool));
            Assert.Contains("<license type=\"expression\">Apache-2.0</license>", Nuspec(tool));
        }

        // A NuGet.Config with only the local folder: the install needs no network.
        var config = Path.Combine(_dir, "nuget.config");
        File.WriteAllText(config, $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration><packageSources><clear /><add key="local" value="{pkgs}" /></packageSources></configuration>
            """);
        var tools = Path.Combine(_dir, "tools");
        var install = Run("dotnet", _dir, "tool", "install", "vkpeft", "--tool-path", tools, "--configfile", config, "--add-source", pkgs);
        Assert.True(install.Code == 0, $"dotnet tool install:\n{install.Output}");
        var help = Run(Path.Combine(tools, OperatingSystem.IsWindows() ? "vkpeft.exe" : "vkpeft"), _dir, "--help");
        Assert.True(help.Code == 0, help.Output);
        Assert.Contains("Usage:", help.Output, StringComparison.Ordinal);
        Assert.Contains("export", help.Output, StringComparison.Ordinal);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void SampleFineTunesAndExportsAPeftAdapter()
    {
        var sample = Path.Combine(RepoRoot(), "peft", "Samples", "FineTuneSample", "bin", Configuration(), "net10.0", "FineTuneSample.dll");
        var outDir = Path.Combine(_dir, "sample");
        var (code, output) = Run("dotnet", _dir, sample, SharedData.Stories260K("stories260K.bin"), "3", outDir);
        Assert.True(code == 0, output);
        Assert.Contains("step 3: loss", output, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(outDir, "peft", "adapter_config.json")), output);
        Assert.True(File.Exists(Path.Combine(outDir, "peft", "adapter_model.safetensors")), output);
    }
}
