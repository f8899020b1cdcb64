using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace LongCluster.Service;

/// <summary>
/// Mutual TLS between silos (Orleans' Connections.Security): every silo presents a certificate issued by the
/// cluster's authority and accepts only peers whose certificate chains to that same authority, so a process
/// without the cluster's credentials can neither join nor call. PEM files.
/// </summary>
public sealed class SiloTlsOptions
{
    /// <summary>This silo's certificate (PEM).</summary>
    public string CertificateFile { get; set; } = "";

    /// <summary>Its private key (PEM).</summary>
    public string KeyFile { get; set; } = "";

    /// <summary>The cluster's certificate authority (PEM): peers must chain to it.</summary>
    public string AuthorityFile { get; set; } = "";

    public bool Enabled => CertificateFile.Length > 0 || KeyFile.Length > 0 || AuthorityFile.Length > 0;

    public void Validate()
    {
        if (!Enabled)
        {
            return;
        }

        foreach ((string name, string path) in new[] { ("Tls:CertificateFile", CertificateFile), ("Tls:KeyFile", KeyFile), ("Tls:AuthorityFile", AuthorityFile) })
        {
            if (path.Length == 0 || !File.Exists(path))
            {
                throw new ArgumentException($"{name}: {(path.Length == 0 ? "not set (TLS needs the certificate, its key and the authority)" : $"no file '{path}'")}", nameof(CertificateFile));
            }
        }
    }

    /// <summary>This silo's certificate with its key, usable by SslStream on Linux.</summary>
    public X509Certificate2 LoadCertificate()
    {
        using X509Certificate2 pem = X509Certificate2.CreateFromPemFile(CertificateFile, KeyFile);
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    public X509Certificate2 LoadAuthority() => X509CertificateLoader.LoadCertificateFromFile(AuthorityFile);

    /// <summary>Whether <paramref name="certificate"/> chains to <paramref name="authority"/> (and only to it).</summary>
    public static bool IsIssuedBy(X509Certificate2? certificate, X509Certificate2 authority)
    {
        if (certificate is null)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return chain.Build(certificate) && chain.ChainElements[^1].Certificate.Thumbprint == authority.Thumbprint;
    }

    /// <summary>Accepts a peer only if its certificate chains to the cluster's authority; host names are not checked (silos are reached by IP).</summary>
    internal static bool Accept(X509Certificate2? certificate, X509Certificate2 authority, SslPolicyErrors errors) =>
        (errors & SslPolicyErrors.RemoteCertificateNotAvailable) == 0 && IsIssuedBy(certificate, authority);
}
