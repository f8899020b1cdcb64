namespace LongCluster.Kernels.Tests;

public sealed class RetrievalRuleTests
{
    [Fact]
    public void Parse_Bare_AllDefaults()
    {
        RetrievalRule rule = RetrievalRule.Parse("retrieval");
        Assert.Equal(new RetrievalRule(), rule);
        Assert.Equal((128, 4, 16, 128, 4096, 512), (rule.Block, rule.Representatives, rule.TopK, rule.Init, rule.Local, rule.Chunk));
        Assert.Equal("retrieval:block=128,repr=4,topk=16,init=128,local=4096,chunk=512", rule.ToString());
    }

    [Fact]
    public void Parse_Subset_RestDefault()
    {
        RetrievalRule rule = RetrievalRule.Parse(" Retrieval:topk=3, block=8 ,local=0 ");
        Assert.Equal(new RetrievalRule { Block = 8, TopK = 3, Local = 0 }, rule);
        Assert.Equal(rule, RetrievalRule.Parse(rule.ToString()));
    }

    [Theory]
    [InlineData("retrieval:block=0", "block")]
    [InlineData("retrieval:block=-3", "block")]
    [InlineData("retrieval:topk=0", "topk")]
    [InlineData("retrieval:repr=0", "repr")]
    [InlineData("retrieval:block=4,repr=5", "repr")]
    [InlineData("retrieval:repr=129", "repr")]
    [InlineData("retrieval:chunk=0", "chunk")]
    [InlineData("retrieval:init=-1", "init")]
    [InlineData("retrieval:local=-1", "local")]
    [InlineData("retrieval:blocks=4", "blocks")]
    [InlineData("retrieval:block=4,block=8", "block")]
    [InlineData("retrieval:topk=two", "topk")]
    [InlineData("retrieval:topk=", "topk")]
    [InlineData("retrieval:chunk=99999999999", "chunk")]
    [InlineData("retrieval:block=4,,topk=2", "key=value")]
    [InlineData("retrieval:", "key=value")]
    public void Parse_BadParameter_RefusedNamingIt(string text, string field)
    {
        FormatException e = Assert.Throws<FormatException>(() => RetrievalRule.Parse(text));
        Assert.Contains(field, e.Message, StringComparison.Ordinal);
        Assert.Contains(text, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_OutOfRange_ThrowsWithTheFieldAsParameterName()
    {
        ArgumentException e = Assert.Throws<ArgumentException>(() => new RetrievalRule { Block = 4, Representatives = 5 }.Validate());
        Assert.Equal("repr", e.ParamName);
        Assert.Equal("block", Assert.Throws<ArgumentException>(() => default(RetrievalRule).Validate()).ParamName);
    }

    [Theory]
    [InlineData("retrieval")]
    [InlineData("retrieval:block=16,topk=2")]
    public void AttentionMaskParse_Retrieval_RefusedAsNotPositional(string text)
    {
        FormatException e = Assert.Throws<FormatException>(() => AttentionMask.Parse(text));
        Assert.Contains("depends on Q and K rather than positions", e.Message, StringComparison.Ordinal);
        Assert.Contains("memory grains", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AttentionMaskParse_BadRetrieval_NamesTheParameterFirst()
    {
        FormatException e = Assert.Throws<FormatException>(() => AttentionMask.Parse("retrieval:topk=0"));
        Assert.Contains("topk must be >= 1", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(4 + 16 - 1 + 7, 0)]
    [InlineData(4 + 16 - 1 + 8, 1)]
    [InlineData(4 + 16 - 1 + 8 + 8, 2)]
    [InlineData(1000, 3)]
    public void EvictedBlocks_FollowsTheFormula(long chunkStart, int expected)
    {
        var rule = new RetrievalRule { Block = 8, Init = 4, Local = 16 };
        Assert.Equal(expected, rule.EvictedBlocks(chunkStart, blocks: 3));
    }

    [Theory]
    [InlineData(3, 0)]
    [InlineData(4, 0)]
    [InlineData(11, 0)]
    [InlineData(12, 1)]
    [InlineData(27, 2)]
    [InlineData(28, 3)]
    public void BlockCount_OnlyWholeBlocks(long tokens, int expected) =>
        Assert.Equal(expected, new RetrievalRule { Block = 8, Init = 4 }.BlockCount(tokens));
}
