using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace LongCluster.Service;

/// <summary>
/// A cluster's certificate authority and the silo certificates it issues, as PEM files in a directory: what
/// <c>longcluster local-cluster --processes</c> gives its silos, and what an operator can use to try a cluster
/// before wiring in their own PKI. Every silo gets its own key; the authority's key is written only for issuing more.
/// </summary>
public sealed class ClusterCertificates
{
    private readonly X509Certificate2 _authority;

    private ClusterCertificates(string directory, X509Certificate2 authority)
    {
        Directory = directory;
        _authority = authority;
        AuthorityFile = Path.Combine(directory, "cluster-ca.pem");
    }

    public string Directory { get; }

    /// <summary>The authority's certificate (PEM): every silo's <see cref="SiloTlsOptions.AuthorityFile"/>.</summary>
    public string AuthorityFile { get; }

    /// <summary>Creates a fresh authority (named <paramref name="name"/>, valid for <paramref name="lifetime"/>) in <paramref name="directory"/>.</summary>
    public static ClusterCertificates Create(string directory, string name = "LongCluster local cluster", TimeSpan? lifetime = null)
    {
        System.IO.Directory.CreateDirectory(directory);
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        X509Certificate2 authority = request.CreateSelfSigned(now.AddMinutes(-5), now + (lifetime ?? TimeSpan.FromDays(365)));
        var certificates = new ClusterCertificates(directory, authority);
        File.WriteAllText(certificates.AuthorityFile, authority.ExportCertificatePem());
        WritePrivate(Path.Combine(directory, "cluster-ca.key"), key.ExportPkcs8PrivateKeyPem());
        return certificates;
    }

    /// <summary>Issues a certificate for silo <paramref name="name"/> and writes it with its key; returns the TLS options that name them.</summary>
    public SiloTlsOptions Issue(string name)
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        using X509Certificate2 issued = request.Create(_authority, now.AddMinutes(-5), _authority.NotAfter.AddMinutes(-1), RandomNumberGenerator.GetBytes(16));
        string certificate = Path.Combine(Directory, $"{name}.pem");
        string keyFile = Path.Combine(Directory, $"{name}.key");
        File.WriteAllText(certificate, issued.ExportCertificatePem());
        WritePrivate(keyFile, key.ExportPkcs8PrivateKeyPem());
        return new SiloTlsOptions { CertificateFile = certificate, KeyFile = keyFile, AuthorityFile = AuthorityFile };
    }

    private static void WritePrivate(string path, string pem)
    {
        File.WriteAllText(path, pem);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }
}
