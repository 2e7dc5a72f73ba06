"""WebDataset shard layout (one folder per benchmark split: shards/<benchmark>/<split>/).

Each sample is one frame of the split, key = frame_id (no dots), with members
- `<key>.tokens.npy`: CCT384 token map after the frozen blocks (the encoder's `freeze_te` cut; the
  final map when every block is frozen), float16 (576, 384);
- `<key>.desc.npy`: pooled global descriptor of the final token map, float32 (384,), L2-normalised;
- `<key>.json`: the split-table row (split, role, order, positions, seq bounds, positives...).
Samples are in split-table order (db rows, then query rows, each by `order`). Tar headers are fixed
(mtime 0, uid/gid 0, empty user/group names, mode 0644), so the same input gives identical bytes.

Beside the shards:
- `manifest.json`: {"benchmark", "split", "samples", "shards": [{"name", "samples", "bytes", "sha256"}]};
- `index.wids.json`: the `wids` shard index ({"__kind__": "wids-shard-index-v1", "wids_version": 1,
  "shardlist": [{"url", "nsamples"}]}) for reading by sample index;
- `db_descriptors.npy` / `query_descriptors.npy`: (N, 384) float32 descriptors in struct-file order,
  the per-split arrays seqNet-style code loads.
"""

SAMPLE_MEMBERS = ("tokens.npy", "desc.npy", "json")
MANIFEST = "manifest.json"
WIDS_INDEX = "index.wids.json"
DESCRIPTOR_FILES = {"db": "db_descriptors.npy", "query": "query_descriptors.npy"}
SHARD_PATTERN = "{split}-{index:06d}.tar"
