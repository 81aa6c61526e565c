// What the method recipe tests on stories260K share: a temporary folder for their runs (removed afterwards), the model's
// path and the pattern-stories data written into that folder.
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Training;

public abstract class StoriesRunTests(string prefix) : IDisposable
{
    /// <summary>The test class's temporary folder.</summary>
    protected string Dir { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    /// <summary>stories260K.bin from the shared data.</summary>
    protected static string Model => SharedData.Path("models", "stories260K", "stories260K.bin");

    /// <summary>Writes the pattern stories into <see cref="Dir"/> and returns the file.</summary>
    protected string WriteData() => TinyModels.WritePatternStories(Dir);

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}
