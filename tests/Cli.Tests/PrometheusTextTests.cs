namespace LongCluster.Cli.Tests;

public sealed class PrometheusTextTests
{
    /// <summary>What OpenTelemetry's Prometheus exporter writes for the "System.Runtime" meter, with the oddities the format allows.</summary>
    private const string Metrics = """
        # HELP dotnet_gc_last_collection_heap_size_bytes The managed GC heap size (including fragmentation), as observed during the latest garbage collection.
        # TYPE dotnet_gc_last_collection_heap_size_bytes gauge
        dotnet_gc_last_collection_heap_size_bytes{gc_heap_generation="gen0",otel_scope_name="System.Runtime"} 1.5e+06 1718000000000
        dotnet_gc_last_collection_heap_size_bytes{gc_heap_generation="gen1",otel_scope_name="System.Runtime"} 250000 1718000000000
        dotnet_gc_last_collection_heap_size_bytes{gc_heap_generation="gen2",otel_scope_name="System.Runtime"} 4.25E7
        dotnet_gc_last_collection_heap_size_bytes{gc_heap_generation="loh",otel_scope_name="System.Runtime"}   1000000
        dotnet_gc_last_collection_heap_size_bytes{gc_heap_generation="poh",} 0

        # TYPE dotnet_process_memory_working_set_bytes gauge
        dotnet_process_memory_working_set_bytes{otel_scope_name="System.Runtime"} 2.61e8
        dotnet_process_memory_working_set_bytes_peak 9e9
        # TYPE dotnet_gc_collections_total counter
        dotnet_gc_collections_total{gc_heap_generation="gen0"} 12
        dotnet_gc_collections_total{gc_heap_generation="gen2"} 3
        longcluster_note{text="a } brace, a \"quote\", a \\ and a, comma",silo="s1"} 7
        longcluster_up 1
        longcluster_inf +Inf
        """;

    [Fact]
    public void Sum_HeapOverGenerations_AddsEveryLabelSet()
    {
        Assert.Equal(45_250_000d, PrometheusText.Sum(Metrics, SiloMemory.HeapMetric));
    }

    [Fact]
    public void Sum_WorkingSet_IgnoresLongerNamesThatStartTheSame()
    {
        Assert.Equal(2.61e8, PrometheusText.Sum(Metrics, SiloMemory.RssMetric));
    }

    [Fact]
    public void Sum_CounterByPlainName_FindsTheTotalSeries()
    {
        Assert.Equal(15d, PrometheusText.Sum(Metrics, "dotnet_gc_collections"));
        Assert.Equal(15d, PrometheusText.Sum(Metrics, "dotnet_gc_collections_total"));
    }

    [Theory]
    [InlineData("dotnet_process_memory_working_set")]
    [InlineData("dotnet_gc_heap_size_bytes")]
    [InlineData("longcluster")]
    public void Sum_MetricAbsent_Null(string metric)
    {
        Assert.Null(PrometheusText.Sum(Metrics, metric));
    }

    [Fact]
    public void Sum_NoLabelsAndInfinity_ReadAsNumbers()
    {
        Assert.Equal(1d, PrometheusText.Sum(Metrics, "longcluster_up"));
        Assert.Equal(double.PositiveInfinity, PrometheusText.Sum(Metrics, "longcluster_inf"));
    }

    [Fact]
    public void Samples_QuotedLabelValues_UnescapedWithBracesAndCommas()
    {
        var (labels, value) = Assert.Single(PrometheusText.Samples(Metrics, "longcluster_note"));
        Assert.Equal("a } brace, a \"quote\", a \\ and a, comma", labels["text"]);
        Assert.Equal("s1", labels["silo"]);
        Assert.Equal(7d, value);
    }

    [Fact]
    public void Sum_CrLfLines_SameAsLf()
    {
        Assert.Equal(45_250_000d, PrometheusText.Sum(Metrics.Replace("\n", "\r\n", StringComparison.Ordinal), SiloMemory.HeapMetric));
    }

    [Theory]
    [InlineData("m{a=\"1\"} twelve", "not a number 'twelve'")]
    [InlineData("m{a=1} 3", "a label without a quoted value")]
    [InlineData("m{a=\"1} 3", "an unterminated label value")]
    [InlineData("m{a=\"1\"}", "a sample without a value")]
    public void Sum_Malformed_FormatExceptionSaysWhat(string text, string expected)
    {
        var e = Assert.Throws<FormatException>(() => PrometheusText.Sum(text, "m"));
        Assert.Contains(expected, e.Message);
    }
}
