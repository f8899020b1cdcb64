using System.Runtime.InteropServices;

namespace LongCluster.Cli;

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM, as one cancellation: a long-running command stops the same way whether a user
/// presses Ctrl+C or a supervisor (systemd, Kubernetes, a test) sends SIGTERM, and cleans up before it exits.
/// </summary>
internal sealed class StopSignal : IDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;

    public StopSignal()
    {
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
    }

    public CancellationToken Token => _stop.Token;

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _stop.Dispose();
    }

    private void Stop(PosixSignalContext context)
    {
        context.Cancel = true; // this command stops itself, after its clean-up
        _stop.Cancel();
    }
}
