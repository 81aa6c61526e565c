// The generated shader catalog: product lines of shaders.list expand into one variant per axis value with typed keys
// and parsed defines, keys are unique, and tile sizes the runtime dispatches with come from the variants' defines.
using VkPeft.Runtime.Kernels;

namespace VkPeft.Tests.Runtime;

public sealed class ShaderCatalogTests
{
    private static readonly Dictionary<ShaderFormat, string[]> FormatDefines = new()
    {
        [ShaderFormat.Nf4] = ["QFMT_NF4"], [ShaderFormat.Nf4Dq] = ["QFMT_NF4", "QDQ"],
        [ShaderFormat.Fp4] = ["QFMT_FP4"], [ShaderFormat.Fp4Dq] = ["QFMT_FP4", "QDQ"],
        [ShaderFormat.Int4] = ["QFMT_INT4"], [ShaderFormat.Q40] = ["QFMT_Q4_0"],
        [ShaderFormat.Q41] = ["QFMT_Q4_1"], [ShaderFormat.Q80] = ["QFMT_Q8_0"],
    };

    [Fact]
    public void KeysAreUniqueAndFindReturnsTheirVariant()
    {
        Assert.Equal(ShaderCatalog.All.Length, ShaderCatalog.All.Select(s => s.Key).Distinct().Count());
        foreach (var info in ShaderCatalog.All)
        {
            Assert.Equal(info.Id, ShaderCatalog.Find(info.Key));
            Assert.Equal(info, ShaderCatalog.Info(info.Id));
        }
        Assert.False(ShaderCatalog.TryFind(new ShaderKey(ShaderFamily.Fill, Format: ShaderFormat.Nf4), out _));
        Assert.Throws<ArgumentException>(() => ShaderCatalog.Find(new ShaderKey(ShaderFamily.QmatmulLanesWord, Format: ShaderFormat.Q80)));
    }

    [Theory]
    [InlineData(ShaderFamily.Dequant, false)]
    [InlineData(ShaderFamily.Qmatmul, false)]
    [InlineData(ShaderFamily.QmatmulLanes, false)]
    [InlineData(ShaderFamily.QmatmulLanesNn, false)]
    [InlineData(ShaderFamily.EmbeddingDequant, false)]
    [InlineData(ShaderFamily.QmatmulWord, true)]
    [InlineData(ShaderFamily.QmatmulLanesWord, true)]
    [InlineData(ShaderFamily.QmatmulLanesNnWord, true)]
    public void ProductLinesExpandOverTheirFormatAxis(ShaderFamily family, bool nibblesOnly)
    {
        var variants = ShaderCatalog.All.Where(s => s.Key.Family == family).ToArray();
        var expected = FormatDefines.Keys.Where(f => !nibblesOnly || f is not (ShaderFormat.Q40 or ShaderFormat.Q41 or ShaderFormat.Q80)).ToArray();
        Assert.Equal(expected.Order(), variants.Select(v => v.Key.Format!.Value).Distinct().Order());
        // Some families also expand over tile axes: one variant per key, each tile's RB and tile type as declared.
        Assert.Equal(variants.Length, variants.Select(v => v.Key).Distinct().Count());
        Assert.All(variants, v => Assert.Equal(v.Key.TileType == ShaderTileType.F16, v.Has("FP16_TILES")));
        Assert.All(variants.Where(v => v.Key.Tile is not null), v => Assert.Equal(v.Key.Tile switch { ShaderTile.M8 => 1u, ShaderTile.M16 => 2u, _ => 0u }, v.DefineUInt("RB")));
        foreach (var v in variants)
        {
            // The axis value's defines are appended to the line's own, and no other format's define sneaks in.
            var fmt = FormatDefines[v.Key.Format!.Value];
            Assert.All(fmt, d => Assert.True(v.Has(d), $"{v.Name} lacks -D{d}"));
            Assert.Equal(fmt.Length, v.DefineValues.Keys.Count(k => k.StartsWith("QFMT_", StringComparison.Ordinal) || k == "QDQ"));
            Assert.Equal(family != ShaderFamily.Dequant && family != ShaderFamily.EmbeddingDequant, v.Has("QUANT_B"));
        }
    }

    [Theory]
    [InlineData(1u, 8u, 16u)]
    [InlineData(15u, 8u, 16u)]
    [InlineData(16u, 16u, 16u)]
    [InlineData(31u, 16u, 16u)]
    [InlineData(32u, 16u, 16u)]
    [InlineData(600u, 16u, 16u)]
    public void WordKernelsTakeTheLargestTileTheRowsFill(uint m, uint nnRows, uint fwdRows)
    {
        Assert.Equal(nnRows, MatMul.LanesTile(QuantizedMatMul.LargestTileFor(ShaderFamily.QmatmulLanesNnWord, ShaderFormat.Nf4Dq, m)).M);
        Assert.Equal(fwdRows, MatMul.LanesTile(QuantizedMatMul.LargestTileFor(ShaderFamily.QmatmulLanesWord, ShaderFormat.Int4, m)).M);
    }

    [Fact]
    public void LanesTilesComeFromTheVariantDefines()
    {
        var info = ShaderCatalog.Info(ShaderId.MatmulLanes);
        Assert.Equal((info.DefineUInt("RB") * info.DefineUInt("SG"), info.DefineUInt("CB") * info.DefineUInt("SG")), MatMul.LanesTile(ShaderId.MatmulLanes));
        Assert.Equal((8u * ShaderCatalog.Info(ShaderId.MatmulLanesNn).DefineUInt("RB"), 64u), MatMul.LanesTile(ShaderId.MatmulLanesNn));
        Assert.Equal(8u, info.DefineUInt("SG"));   // "8u" parses as the shader's unsigned 8
        Assert.Throws<InvalidOperationException>(() => info.DefineUInt("NOT_A_DEFINE"));
        Assert.Throws<ArgumentException>(() => MatMul.LanesTile(ShaderId.Fill));
    }
}
