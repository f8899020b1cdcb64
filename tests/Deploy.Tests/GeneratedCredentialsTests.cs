using System.Security.Cryptography.X509Certificates;
using System.Text;
using LongCluster.Service;
using YamlDotNet.RepresentationModel;

namespace LongCluster.Deploy.Tests;

/// <summary>The TLS Secret the chart generates holds what the silo's own loader accepts: a silo certificate with its key that chains to the authority, usable both ways (mutual TLS).</summary>
public sealed class GeneratedCredentialsTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("lc-tls-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task TlsSecret_Generated_LoadsInTheSiloAndChainsToItsAuthority()
    {
        Manifests render = await ChartTests.RenderAsync("default");
        YamlMappingNode data = render.Single("Secret", "-tls").Map("data");
        var tls = new SiloTlsOptions
        {
            CertificateFile = Write(data, "tls.crt"),
            KeyFile = Write(data, "tls.key"),
            AuthorityFile = Write(data, "ca.crt"),
        };

        tls.Validate();
        using X509Certificate2 certificate = tls.LoadCertificate();
        using X509Certificate2 authority = tls.LoadAuthority();

        Assert.True(certificate.HasPrivateKey);
        Assert.True(SiloTlsOptions.IsIssuedBy(certificate, authority));
        var usages = certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().Single().EnhancedKeyUsages.Cast<System.Security.Cryptography.Oid>().Select(o => o.Value).ToList();
        Assert.Contains("1.3.6.1.5.5.7.3.1", usages); // serverAuth
        Assert.Contains("1.3.6.1.5.5.7.3.2", usages); // clientAuth
        Assert.True(certificate.NotAfter > DateTime.UtcNow.AddYears(9));
    }

    [Fact]
    public async Task Secrets_TwoPlainRenders_Differ()
    {
        // Without a cluster to look the old Secret up in, every render generates anew: why deploy/k8s names Secrets.
        string first = (await ChartTests.RenderAsync("default")).Single("Secret", "-api-token").Map("data").Text("token");
        string second = (await ChartTests.RenderAsync("default")).Single("Secret", "-api-token").Map("data").Text("token");

        Assert.NotEqual(first, second);
    }

    private string Write(YamlMappingNode data, string key)
    {
        string path = Path.Combine(_directory, key);
        File.WriteAllBytes(path, Convert.FromBase64String(data.Text(key)));
        Assert.StartsWith("-----BEGIN ", Encoding.ASCII.GetString(File.ReadAllBytes(path)));
        return path;
    }
}
