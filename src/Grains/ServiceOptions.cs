using LongCluster.Kernels.Backends;
using LongCluster.Kernels.Planning;

namespace LongCluster.Grains;

/// <summary>Limits and client-API settings of the attention service, per silo (configuration section <c>LongCluster:Service</c>).</summary>
public sealed class AttentionServiceOptions
{
    /// <summary>Default resident-byte budget: half of what the GC may use, leaving room for transfers and compute scratch.</summary>
    public static readonly long DefaultMaxResidentBytes = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;

    /// <summary>Bytes of KV, pending uploads and unread outputs all shards on this silo may hold together.</summary>
    public long MaxResidentBytes { get; set; } = DefaultMaxResidentBytes;

    /// <summary>Longest sequence (tokens over all chunks and decode steps).</summary>
    public long MaxTokensPerSequence { get; set; } = 4L * 1024 * 1024;

    /// <summary>Sequences with a shard on this silo at once.</summary>
    public int MaxSequences { get; set; } = 64;

    /// <summary>Largest HTTP request body (an upload of one shard's rows for one layer).</summary>
    public long MaxRequestBytes { get; set; } = 2L * 1024 * 1024 * 1024;

    /// <summary>Bearer token every client request must carry; required (at least 16 characters).</summary>
    public string ApiToken { get; set; } = "";

    /// <summary>
    /// Optional read-only token (at least 16 characters when set): it opens the status page (<c>/</c>,
    /// <c>/status.json</c>) and never the <c>/v1</c> API. The API token opens the status page too.
    /// </summary>
    public string StatusToken { get; set; } = "";

    /// <summary>How long a shard waits for a peer's next block before the layer fails (a lost peer must not hang the run).</summary>
    public TimeSpan ReceiveTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// What computes the shards' attention: <c>auto</c> (ILGPU on CUDA when this machine has a CUDA device, else the CPU
    /// SIMD kernels), <c>cpu</c>, or <c>ilgpu</c> (ILGPU on CUDA, or on ILGPU's CPU accelerator where there is none —
    /// for tests, not speed). One backend per process: the silos of an in-process cluster share it.
    /// </summary>
    public string KernelBackend { get; set; } = "auto";

    /// <summary>Bytes of device memory the GPU backend may keep KV segments in; 0 = 80% of the device's memory. Past it, segments are copied for each call.</summary>
    public long DeviceBudgetBytes { get; set; }

    /// <summary>Kernel threads per shard; 0 = the machine's cores divided by the shards on this silo of the running layer.</summary>
    public int KernelThreads { get; set; }

    /// <summary>How often an idle shard asks its coordinator whether the sequence still exists (an orphan frees its memory).</summary>
    public TimeSpan OrphanCheckInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Whether the client API speaks MessagePack for control messages besides JSON (<c>Content-Type</c>/<c>Accept</c>
    /// <c>application/x-msgpack</c>); false: JSON only, a MessagePack body is refused with 415 and answers are JSON
    /// whatever the request accepts.
    /// </summary>
    public bool MessagePack { get; set; } = true;

    /// <summary>
    /// The hardware profile <c>layout: auto</c> plans with: a JSON file path or a built-in profile's name
    /// (<see cref="HardwareProfile.BuiltInNames"/>); empty: <see cref="HardwareProfile.DefaultName"/>. Loaded and
    /// checked at start-up.
    /// </summary>
    public string CostProfile { get; set; } = "";

    /// <summary>Default memory-tier budget: a quarter of what the GC may use, beside the shards' resident budget.</summary>
    public static readonly long DefaultMemoryBudgetBytes = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>
    /// Bytes of evicted KV blocks (retrieval sequences) the memory grains on this silo keep in memory together; past
    /// it, a block's K and V go to a memory-mapped file under <see cref="MemorySpillDirectory"/>. 0 spills every block.
    /// </summary>
    public long MemoryBudgetBytes { get; set; } = DefaultMemoryBudgetBytes;

    /// <summary>
    /// Where memory grains spill blocks past <see cref="MemoryBudgetBytes"/>: each silo writes in a folder of its own,
    /// held by a lock file; at start-up a silo removes the folders no live silo holds (a crashed silo's files).
    /// </summary>
    public string MemorySpillDirectory { get; set; } = Path.Combine(Path.GetTempPath(), "longcluster-memory");

    /// <summary>The profile <see cref="CostProfile"/> names.</summary>
    public HardwareProfile LoadCostProfile() => string.IsNullOrWhiteSpace(CostProfile) ? HardwareProfile.Default : HardwareProfile.Load(CostProfile);

    public void Validate()
    {
        if (MaxResidentBytes <= 0 || MaxTokensPerSequence <= 0 || MaxSequences <= 0 || MaxRequestBytes <= 0)
        {
            throw new ArgumentException("MaxResidentBytes, MaxTokensPerSequence, MaxSequences and MaxRequestBytes must be positive", nameof(MaxResidentBytes));
        }

        if ((ApiToken ?? "").Length < 16)
        {
            throw new ArgumentException("ApiToken must be set to at least 16 characters (LongCluster__Service__ApiToken)", nameof(ApiToken));
        }

        if (StatusToken is { Length: > 0 and < 16 })
        {
            throw new ArgumentException("StatusToken, when set, must be at least 16 characters (LongCluster__Service__StatusToken)", nameof(StatusToken));
        }

        if (KernelBackend.ToLowerInvariant() is not ("auto" or "cpu" or "ilgpu"))
        {
            throw new ArgumentException($"KernelBackend must be auto, cpu or ilgpu, got '{KernelBackend}' (LongCluster__Service__KernelBackend)", nameof(KernelBackend));
        }

        if (DeviceBudgetBytes < 0)
        {
            throw new ArgumentException($"DeviceBudgetBytes must be >= 0 (0 = 80% of the device), got {DeviceBudgetBytes}", nameof(DeviceBudgetBytes));
        }

        if (ReceiveTimeout <= TimeSpan.Zero || OrphanCheckInterval <= TimeSpan.Zero || KernelThreads < 0)
        {
            throw new ArgumentException("ReceiveTimeout and OrphanCheckInterval must be positive and KernelThreads >= 0", nameof(ReceiveTimeout));
        }

        if (MemoryBudgetBytes < 0)
        {
            throw new ArgumentException($"MemoryBudgetBytes must be >= 0 (0 spills every evicted block), got {MemoryBudgetBytes} (LongCluster__Service__MemoryBudgetBytes)", nameof(MemoryBudgetBytes));
        }

        if (string.IsNullOrWhiteSpace(MemorySpillDirectory) || MemorySpillDirectory.IndexOfAny(Path.GetInvalidPathChars()) >= 0)
        {
            throw new ArgumentException($"MemorySpillDirectory must be a folder path, got '{MemorySpillDirectory}' (LongCluster__Service__MemorySpillDirectory)", nameof(MemorySpillDirectory));
        }

        try
        {
            _ = LoadCostProfile();
        }
        catch (HardwareProfileException e)
        {
            throw new ArgumentException($"CostProfile: {e.Message}", nameof(CostProfile), e);
        }
    }
}

/// <summary>
/// What the shards on one silo hold, against <see cref="AttentionServiceOptions"/>' limits. Reservations are taken
/// before memory is used and released when it is freed, so a refused request changes nothing.
/// </summary>
public sealed class SiloResources(AttentionServiceOptions options, IAttentionBackend? backend = null)
{
    private readonly Lock _lock = new();
    private long _residentBytes;
    private readonly HashSet<string> _sequences = [];
    private readonly Lazy<HardwareProfile> _costProfile = new(options.LoadCostProfile);

    public long ResidentBytes
    {
        get
        {
            lock (_lock)
            {
                return _residentBytes;
            }
        }
    }

    public int Sequences
    {
        get
        {
            lock (_lock)
            {
                return _sequences.Count;
            }
        }
    }

    /// <summary>Ids of the sequences with a shard on this silo, in ordinal order.</summary>
    public IReadOnlyList<string> SequenceIds
    {
        get
        {
            lock (_lock)
            {
                return [.. _sequences.Order(StringComparer.Ordinal)];
            }
        }
    }

    public AttentionServiceOptions Options => options;

    /// <summary>What computes this silo's shards (<see cref="AttentionServiceOptions.KernelBackend"/>); the CPU SIMD kernels unless a host gives another.</summary>
    public IAttentionBackend Backend { get; } = backend ?? CpuBackend.Instance;

    /// <summary>The profile <c>layout: auto</c> plans with, loaded once (<see cref="AttentionServiceOptions.CostProfile"/>).</summary>
    public HardwareProfile CostProfile => _costProfile.Value;

    public void ReserveBytes(long bytes, string field)
    {
        lock (_lock)
        {
            if (_residentBytes + bytes > options.MaxResidentBytes)
            {
                throw ServiceException.Limit(field, $"this silo holds {_residentBytes} bytes and may hold {options.MaxResidentBytes}; {bytes} more do not fit");
            }

            _residentBytes += bytes;
        }
    }

    /// <summary>Adds (or with a negative value removes) bytes already held, without checking the budget.</summary>
    public void Adjust(long bytes) => ReleaseBytes(-bytes);

    public void ReleaseBytes(long bytes)
    {
        lock (_lock)
        {
            _residentBytes -= bytes;
        }
    }

    public void AddSequence(string id)
    {
        lock (_lock)
        {
            if (!_sequences.Contains(id) && _sequences.Count >= options.MaxSequences)
            {
                throw ServiceException.Limit("shards", $"this silo already hosts shards of {_sequences.Count} sequences, its limit (MaxSequences)");
            }

            _sequences.Add(id);
        }
    }

    public void RemoveSequence(string id)
    {
        lock (_lock)
        {
            _sequences.Remove(id);
        }
    }
}
