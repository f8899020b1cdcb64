using System.Collections.Concurrent;

namespace LongCluster.Service.Tests;

/// <summary>An HTTP handler that notes every exchange a client makes: what it sent and what came back.</summary>
internal sealed class RecordingHandler() : DelegatingHandler(new SocketsHttpHandler())
{
    public ConcurrentQueue<Exchange> Exchanges { get; } = new();

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
        Exchanges.Enqueue(new Exchange(
            request.Method.Method, request.RequestUri!.AbsolutePath, request.Content?.Headers.ContentType?.MediaType, request.Headers.Accept.ToString(),
            (int)response.StatusCode, response.Content.Headers.ContentType?.MediaType));
        return response;
    }

    /// <param name="RequestType">The request body's media type (null: no body).</param>
    /// <param name="AnswerType">The answer body's media type (null: no body).</param>
    public sealed record Exchange(string Method, string Path, string? RequestType, string Accept, int Status, string? AnswerType)
    {
        /// <summary>A control request (tensor requests are PUT uploads, output reads, decode steps).</summary>
        public bool Control => !Path.EndsWith("/output", StringComparison.Ordinal) && !Path.EndsWith("/decode", StringComparison.Ordinal) && Method != "PUT" && Method != "DELETE";
    }
}
