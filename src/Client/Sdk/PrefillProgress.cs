namespace LongCluster.Client;

/// <summary>Progress of a prefill: the phase (upload, run, read) of a layer, and bytes uploaded of the layer's total.</summary>
public sealed record PrefillProgress(int Layer, int Layers, string Phase, long BytesUploaded, long BytesTotal);
