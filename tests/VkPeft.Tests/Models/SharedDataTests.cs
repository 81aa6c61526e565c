// The test-data locator: stories260K is always found (shared folder, cache or download), the project's fixtures ship
// with the tests, and a missing third-party file is named with the reason a test skips or fails.
using VkPeft.Tests.Support;

namespace VkPeft.Tests.Models;

public sealed class SharedDataTests
{
    [Fact]
    public void Stories260KAndTheFixturesAreFound()
    {
        Assert.True(File.Exists(SharedData.Stories260K("stories260K.bin")), "stories260K.bin was not located");
        Assert.True(File.Exists(SharedData.Stories260K("tok512.bin")), "tok512.bin was not located beside stories260K.bin");
        Assert.True(File.Exists(SharedData.Fixture("nf4_golden.json")), "the NF4 golden vectors are not among the test fixtures");
        Assert.True(File.Exists(SharedData.Fixture("stories260K_reference.json")), "the stories260K reference logits are not among the test fixtures");
    }

    [Fact]
    public void AMissingThirdPartyFileIsNamedWithTheReason()
    {
        string[] missing = ["tokenizers", "no-such-tokenizer", "tokenizer.json"];
        string? why = SharedData.MissingReason(missing);
        Assert.True(why != null, "a file that does not exist was reported present");
        Assert.Contains("tokenizers/no-such-tokenizer/tokenizer.json", why, StringComparison.Ordinal);
        Assert.False(SharedData.Has(missing), "Has() reports a file that does not exist");
        var e = Assert.Throws<FileNotFoundException>(() => SharedData.Path(missing));
        Assert.Equal(why, e.Message);
    }
}
