"""WebDataset shard layout (one folder per benchmark split: shards/<benchmark>/<split>/).

Each sample is one frame of the split, key = frame_id (no dots), with members
- `<key>.tokens.npy`: CCT384 token map after the frozen blocks (the encoder's `freeze_te` cut; the
  final map when every block is frozen), float16 (576, 384): 24 x 24 patches in row-major order;
- `<key>.desc.npy`: pooled global descriptor of the final token map, float32 (384,), L2-normalised;
- `<key>.json`: the split-table row (schemas/split_table.py: split, role, order, positions, seq bounds,
  positives...).
Samples are in split-table order (db rows, then query rows, each by `order`), so sample number
n is db row n for n < counts["db"] and query row n - counts["db"] after. Shards (`SHARD_PATTERN`)
hold consecutive samples, closed at a sample count and a byte size (settings). Tar headers are
fixed (mtime 0, uid/gid 0, empty user/group names, mode 0644), so the same input gives identical bytes.

Beside the shards:
- `manifest.json`: {"format_version", "benchmark", "split", "samples", "counts": {"db", "query"},
  "members", "window" (the sequence convention), "encoder" (what made the tokens: "model_id" as
  seqvpr.embed.embed.model_id gives it, "weights", "num_layers", "freeze_te", "input_size",
  "preprocessing", "mean", "std"), "split_settings" (the benchmark's effective settings: frame_separation,
  radii, ...), "code_version", "negatives" and "descriptors" ({"file", "sha256", "shape", "dtype"}),
  "shards": [{"name", "samples", "bytes", "sha256"}]};
- `index.wids.json`: the `wids` shard index ({"__kind__": "wids-shard-index-v1", "wids_version": 1,
  "name", "shardlist": [{"url", "nsamples", "filesize"}]}) for reading by sample number;
- `negatives.npy`: (Nq, K) int64 negative candidates of each query (database `order`, outside the
  negative radius), -1 padded: the hard-negative pool training samples from;
- `db_descriptors.npy` / `query_descriptors.npy`: (N, 384) float32 descriptors in struct-file order,
  the per-split arrays seqNet-style code loads.
"""

FORMAT_VERSION = 2
SAMPLE_MEMBERS = ("tokens.npy", "desc.npy", "json")
MANIFEST = "manifest.json"
WIDS_INDEX = "index.wids.json"
NEGATIVES_FILE = "negatives.npy"
DESCRIPTOR_FILES = {"db": "db_descriptors.npy", "query": "query_descriptors.npy"}
SHARD_PATTERN = "{split}-{index:06d}.tar"
MEMBERS = {
    "tokens.npy": "float16 (576, 384): CCT384 tokens after the encoder's frozen blocks (manifest encoder.freeze_te)",
    "desc.npy": "float32 (384,): L2-normalised mean of the final token map",
    "json": "the split-table row (schemas/split_table.py); order, seq_start/seq_end, positives index the split's role arrays",
}
# the sequence convention of seqvpr.seqbounds.centred_sequence and seqvpr.data.sequence_windows
WINDOW = {
    "index_space": "order: a row's index within its role (database or query) of the split",
    "bounds": "seq_start/seq_end: the row's run [start, end) in order space; sequences never cross it",
    "centred": "the length-L sequence of row i starts at i - L // 2, shifted to stay inside its run (seqNet)",
    "short_runs": "a run shorter than L repeats its edge rows (indices clipped to the run)",
}
