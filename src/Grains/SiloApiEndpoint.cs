namespace LongCluster.Grains;

/// <summary>The base URL of this silo's client API (set once its HTTP server is listening), which shards report so clients upload to them directly.</summary>
public sealed class SiloApiEndpoint
{
    private string _url = "";

    public string Url
    {
        get => Volatile.Read(ref _url);
        set => Volatile.Write(ref _url, value);
    }
}
