namespace LongCluster.Grains.Memory;

/// <summary>
/// What the memory grains on one silo hold, against <see cref="AttentionServiceOptions.MemoryBudgetBytes"/>: blocks are
/// kept in memory while they fit and spill to memory-mapped files past it. The silo's files live in a folder of its own
/// under <see cref="AttentionServiceOptions.MemorySpillDirectory"/>, claimed by an exclusively locked file beside it;
/// at start-up the folders whose lock no live silo holds (a crashed silo's, on this machine) are removed.
/// </summary>
public sealed class MemoryTier : IDisposable
{
    private const string LockSuffix = ".lock";

    private readonly Lock _lock = new();
    private readonly long _budget;
    private readonly FileStream _claim;
    private long _resident;
    private long _spilled;
    private int _files;
    private long _nextFile;

    public MemoryTier(AttentionServiceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _budget = options.MemoryBudgetBytes;
        string root = Path.GetFullPath(options.MemorySpillDirectory);
        Directory.CreateDirectory(root);
        RemoveStale(root);
        string name = Guid.NewGuid().ToString("N");
        // The claim first, then the folder: a silo starting meanwhile never sees the folder unclaimed.
        _claim = new FileStream(Path.Combine(root, name + LockSuffix), FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
        Folder = Path.Combine(root, name);
        Directory.CreateDirectory(Folder);
    }

    /// <summary>This silo's spill folder.</summary>
    public string Folder { get; }

    /// <summary>Bytes of blocks (K, V and key sums) held in memory by this silo's memory grains.</summary>
    public long ResidentBytes
    {
        get
        {
            lock (_lock)
            {
                return _resident;
            }
        }
    }

    /// <summary>Bytes of K and V in this silo's spill files.</summary>
    public long SpilledBytes
    {
        get
        {
            lock (_lock)
            {
                return _spilled;
            }
        }
    }

    /// <summary>Spill files that exist now.</summary>
    public int SpillFiles
    {
        get
        {
            lock (_lock)
            {
                return _files;
            }
        }
    }

    /// <summary>
    /// Keeps one block's K and V (and counts <paramref name="extraResidentBytes"/> of what its holder keeps beside them,
    /// its key sums): in memory while the silo's budget allows, else in a new memory-mapped file. Disposing the block
    /// gives everything back.
    /// </summary>
    internal MemoryBlock Keep(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, long extraResidentBytes)
    {
        long bytes = (long)key.Length + value.Length;
        bool spill;
        long file;
        lock (_lock)
        {
            spill = _resident + bytes + extraResidentBytes > _budget;
            _resident += extraResidentBytes + (spill ? 0 : bytes);
            _spilled += spill ? bytes : 0;
            _files += spill ? 1 : 0;
            file = _nextFile++;
        }

        try
        {
            return spill
                ? MemoryBlock.Spill(this, Path.Combine(Folder, $"{file}.kv"), key, value, extraResidentBytes)
                : MemoryBlock.InMemory(this, key, value, extraResidentBytes);
        }
        catch
        {
            Released(bytes, extraResidentBytes, spill);
            throw;
        }
    }

    internal void Released(long bytes, long extraResidentBytes, bool spilled)
    {
        lock (_lock)
        {
            _resident -= extraResidentBytes + (spilled ? 0 : bytes);
            _spilled -= spilled ? bytes : 0;
            _files -= spilled ? 1 : 0;
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Folder, recursive: true);
        }
        catch (IOException)
        {
            // A file still mapped by a grain being torn down: the next silo to start here removes the folder.
        }

        _claim.Dispose();
    }

    /// <summary>Removes every folder under <paramref name="root"/> whose claim can be taken: its silo is gone.</summary>
    private static void RemoveStale(string root)
    {
        foreach (string folder in Directory.GetDirectories(root))
        {
            string claim = folder + LockSuffix;
            FileStream held;
            try
            {
                held = new FileStream(claim, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
            }
            catch (IOException)
            {
                continue; // a live silo holds it
            }

            using (held)
            {
                try
                {
                    Directory.Delete(folder, recursive: true);
                }
                catch (DirectoryNotFoundException)
                {
                    // Another silo starting at the same time took the claim first and removed the folder; this one
                    // found the claim free after that silo let it go.
                }
            }
        }
    }
}
