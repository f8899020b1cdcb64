using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LongCluster.Runtime.Membership;

/// <summary>Timing and voting of membership.</summary>
public sealed class MembershipOptions
{
    /// <summary>How often a silo writes I-am-alive and re-reads the table.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A silo silent this long is suspected; suspicions older than this no longer count.</summary>
    public TimeSpan DeathTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Votes that declare a suspect dead (capped by the number of other active silos, so 2 silos still work).</summary>
    public int VotesForDeath { get; set; } = 2;

    /// <summary>Rows of dead silos are deleted once they have been quiet this long.</summary>
    public TimeSpan DefunctRowAge { get; set; } = TimeSpan.FromHours(1);

    public void Validate()
    {
        if (HeartbeatInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException($"HeartbeatInterval must be positive, got {HeartbeatInterval}", nameof(HeartbeatInterval));
        }

        if (DeathTimeout < 2 * HeartbeatInterval)
        {
            throw new ArgumentException($"DeathTimeout ({DeathTimeout}) must be at least two heartbeats ({2 * HeartbeatInterval}), or live silos get suspected", nameof(DeathTimeout));
        }

        if (VotesForDeath < 1)
        {
            throw new ArgumentException($"VotesForDeath must be >= 1, got {VotesForDeath}", nameof(VotesForDeath));
        }
    }
}

/// <summary>An immutable view of the cluster: the table version it was read at and every row.</summary>
public sealed record MembershipView(long Version, ImmutableArray<MembershipEntry> Members)
{
    public static MembershipView Empty { get; } = new(-1, []);

    /// <summary>Silos that take work, ordered by address so every silo sees the same order.</summary>
    public ImmutableArray<SiloAddress> ActiveSilos { get; } =
        [.. Members.Where(m => m.Status == SiloStatus.Active).Select(m => m.Silo).OrderBy(s => s.ToString(), StringComparer.Ordinal)];

    public SiloStatus? StatusOf(SiloAddress silo) => Members.Where(m => m.Silo == silo).Select(m => (SiloStatus?)m.Status).FirstOrDefault();
}

/// <summary>
/// One silo's membership: it joins (Joining, then Active), heartbeats (I-am-alive plus a fresh read of the table),
/// suspects silos whose I-am-alive is older than the death timeout and votes them dead, and leaves gracefully
/// (ShuttingDown, then Dead). All decisions are conditional writes against the version they were computed from;
/// a lost race just waits for the next heartbeat. The current view is an immutable snapshot replaced atomically;
/// readers never lock. One heartbeat drives everything, on the injected <see cref="TimeProvider"/>.
/// </summary>
public sealed partial class MembershipAgent : IAsyncDisposable
{
    private readonly IMembershipTable _table;
    private readonly MembershipOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private MembershipView _view = MembershipView.Empty;
    private TaskCompletionSource _viewChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task? _loop;

    public MembershipAgent(IMembershipTable table, SiloAddress self, string name, MembershipOptions options, TimeProvider? time = null, ILogger<MembershipAgent>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(self);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _table = table;
        Self = self;
        Name = name;
        _options = options;
        _time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger<MembershipAgent>.Instance;
    }

    public SiloAddress Self { get; }

    public string Name { get; }

    /// <summary>The latest view; replaced as a whole, never mutated.</summary>
    public MembershipView View => Volatile.Read(ref _view);

    /// <summary>Set when the cluster declared this silo dead: it must stop serving.</summary>
    public bool DeclaredDead { get; private set; }

    /// <summary>Inserts this silo as Joining, then marks it Active; retries lost races until <paramref name="cancellationToken"/>.</summary>
    public async Task JoinAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset now = _time.GetUtcNow();
        var entry = new MembershipEntry(Self, SiloStatus.Joining, Name, now, now, []);
        while (true)
        {
            MembershipTableData data = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
            if (data.Find(Self) is { } existing)
            {
                if (await _table.UpdateRowAsync(existing.Entry with { Status = SiloStatus.Active, IAmAliveTime = _time.GetUtcNow() }, existing.ETag, data.Version, cancellationToken).ConfigureAwait(false))
                {
                    break;
                }
            }
            else
            {
                await _table.InsertRowAsync(entry, data.Version, cancellationToken).ConfigureAwait(false);
            }
        }

        Log.Joined(_logger, Self.ToString());
        await RefreshAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Starts heartbeating every <see cref="MembershipOptions.HeartbeatInterval"/>.</summary>
    public void Start() => _loop ??= RunAsync(_stopping.Token);

    /// <summary>
    /// One heartbeat: I-am-alive, re-read, re-insert this silo if its row vanished (a Redis that restarted empty),
    /// vote on silent silos, delete long-dead rows.
    /// </summary>
    public async Task TickAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset now = _time.GetUtcNow();
        await _table.UpdateIAmAliveAsync(Self, now, cancellationToken).ConfigureAwait(false);
        MembershipTableData data = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
        (MembershipEntry Entry, string ETag)? mine = data.Find(Self);
        if (mine is { Entry.Status: SiloStatus.Dead })
        {
            if (!DeclaredDead)
            {
                Log.DeclaredDead(_logger, Self.ToString());
            }

            DeclaredDead = true;
        }
        else if (mine is null && !DeclaredDead)
        {
            Log.Rejoining(_logger, Self.ToString());
            await _table.InsertRowAsync(new MembershipEntry(Self, SiloStatus.Active, Name, now, now, []), data.Version, cancellationToken).ConfigureAwait(false);
            data = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
        }
        else if (!DeclaredDead)
        {
            await VoteAsync(data, now, cancellationToken).ConfigureAwait(false);
        }

        if (_options.DefunctRowAge > TimeSpan.Zero)
        {
            await _table.CleanupDefunctAsync(now - _options.DefunctRowAge, cancellationToken).ConfigureAwait(false);
        }

        await RefreshAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Graceful leave: ShuttingDown (no new placements), then Dead. Stops the heartbeat.</summary>
    public async Task LeaveAsync(CancellationToken cancellationToken)
    {
        await StopLoopAsync().ConfigureAwait(false);
        foreach (SiloStatus status in new[] { SiloStatus.ShuttingDown, SiloStatus.Dead })
        {
            while (true)
            {
                MembershipTableData data = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
                if (data.Find(Self) is not { } mine || mine.Entry.Status == SiloStatus.Dead)
                {
                    break;
                }

                if (await _table.UpdateRowAsync(mine.Entry with { Status = status, IAmAliveTime = _time.GetUtcNow() }, mine.ETag, data.Version, cancellationToken).ConfigureAwait(false))
                {
                    break;
                }
            }
        }

        Log.Left(_logger, Self.ToString());
        await RefreshAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Completes with the first view (current or later) that satisfies <paramref name="predicate"/>.</summary>
    public async Task<MembershipView> WaitForViewAsync(Func<MembershipView, bool> predicate, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        while (true)
        {
            Task changed = Volatile.Read(ref _viewChanged).Task;
            MembershipView view = View;
            if (predicate(view))
            {
                return view;
            }

            await changed.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopLoopAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task VoteAsync(MembershipTableData data, DateTimeOffset now, CancellationToken cancellationToken)
    {
        int othersActive = data.Rows.Count(r => r.Entry.Status == SiloStatus.Active && r.Entry.Silo != Self);
        foreach ((MembershipEntry entry, string etag) in data.Rows)
        {
            if (entry.Silo == Self || entry.Status is SiloStatus.Dead || now - entry.IAmAliveTime < _options.DeathTimeout)
            {
                continue;
            }

            // Fresh votes of other silos, plus ours; the suspect itself does not count towards the quorum.
            List<Suspicion> votes = entry.Suspicions.Where(v => v.Suspecter != Self && now - v.Time < _options.DeathTimeout).ToList();
            votes.Add(new Suspicion(Self, now));
            int needed = Math.Max(1, Math.Min(_options.VotesForDeath, othersActive - (entry.Status == SiloStatus.Active ? 1 : 0) + 1));
            MembershipEntry updated = votes.Count >= needed
                ? entry with { Status = SiloStatus.Dead, Suspicions = votes }
                : entry with { Suspicions = votes };
            if (await _table.UpdateRowAsync(updated, etag, data.Version, cancellationToken).ConfigureAwait(false))
            {
                if (updated.Status == SiloStatus.Dead)
                {
                    Log.DeclaredOtherDead(_logger, entry.Silo.ToString(), votes.Count, (now - entry.IAmAliveTime).TotalSeconds);
                }

                // One conditional write per heartbeat: the version moved, so the rest of this read is stale.
                return;
            }
        }
    }

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        MembershipTableData data = await _table.ReadAllAsync(cancellationToken).ConfigureAwait(false);
        var view = new MembershipView(data.Version, [.. data.Rows.Select(r => r.Entry)]);
        MembershipView previous = Interlocked.Exchange(ref _view, view);
        if (previous.Version != view.Version || !previous.Members.SequenceEqual(view.Members, EntryComparer.Instance))
        {
            Interlocked.Exchange(ref _viewChanged, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(_options.HeartbeatInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await TickAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // The table may be briefly unreachable (a Redis restart): keep heartbeating.
                    Log.HeartbeatFailed(_logger, Self.ToString(), e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task StopLoopAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }
    }

    /// <summary>Membership changes that matter: status and votes, not I-am-alive times.</summary>
    private sealed class EntryComparer : IEqualityComparer<MembershipEntry>
    {
        public static readonly EntryComparer Instance = new();

        public bool Equals(MembershipEntry? x, MembershipEntry? y) =>
            x?.Silo == y?.Silo && x?.Status == y?.Status && (x?.Suspicions.Count ?? 0) == (y?.Suspicions.Count ?? 0);

        public int GetHashCode(MembershipEntry obj) => HashCode.Combine(obj.Silo, obj.Status);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Silo {Silo} joined the cluster")]
        public static partial void Joined(ILogger logger, string silo);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Silo {Silo} left the cluster")]
        public static partial void Left(ILogger logger, string silo);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning, Message = "Declared silo {Silo} dead: {Votes} votes, silent for {Seconds:0.0} s")]
        public static partial void DeclaredOtherDead(ILogger logger, string silo, int votes, double seconds);

        [LoggerMessage(EventId = 103, Level = LogLevel.Error, Message = "Silo {Silo} was declared dead by the cluster and must stop")]
        public static partial void DeclaredDead(ILogger logger, string silo);

        [LoggerMessage(EventId = 104, Level = LogLevel.Warning, Message = "Silo {Silo} has no row in the membership table (table lost?); re-inserting it")]
        public static partial void Rejoining(ILogger logger, string silo);

        [LoggerMessage(EventId = 105, Level = LogLevel.Warning, Message = "Heartbeat of silo {Silo} failed: {Reason}")]
        public static partial void HeartbeatFailed(ILogger logger, string silo, string reason);
    }
}
