"""Checkpoint files: the kept weights, the weights training started from, the best trained epoch's
where the start was kept instead, and what is needed to rebuild the model (`save_checkpoint`,
`load_checkpoint`), written atomically."""
from __future__ import annotations

import io

import torch

from seqvpr.atomic import atomic_write_bytes
from seqvpr.embed.cct import CCTTail
from seqvpr.train.model import build_sequence_model


WEIGHTS = {"kept": "state_dict", "start": "start_state_dict", "trained": "trained_state_dict"}


def save_checkpoint(path, model_name: str, state_dict: dict, meta: dict, start_state_dict: dict | None = None,
                    trained_state_dict: dict | None = None) -> None:
    """meta must hold seq_len, model_kwargs and tail_blocks (CCT blocks trained after the cut), and
    may hold frame_descriptors ({"backbone", "weights"} of the published frame descriptors it read).
    start_state_dict: the weights training started from, kept so the results can show what the
    k-means initialisation alone gives. trained_state_dict: the best trained epoch's weights where
    `state_dict` is the start (no epoch beat it), so the results can show what training gave."""
    buf = io.BytesIO()
    checkpoint = {"model": model_name, "meta": meta}
    for key, weights in zip(WEIGHTS.values(), (state_dict, start_state_dict, trained_state_dict)):
        if weights is not None:
            checkpoint[key] = {k: v.cpu() for k, v in weights.items()}
    torch.save(checkpoint, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, weights: str = "kept"):
    """(model, meta) of a checkpoint with its `weights`: "kept" (the checkpoint's), "start" (those
    its training started from) or "trained" (its best trained epoch's, saved only where the start
    was kept); (None, meta) when it has none of them. Raises ValueError for another name."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    state = checkpoint.get(WEIGHTS[weights])
    if state is None:
        return None, meta
    tail = CCTTail(meta["tail_blocks"]) if meta["tail_blocks"] else None
    model = build_sequence_model(checkpoint["model"], meta["seq_len"], meta["model_kwargs"], tail,
                                 published_features=bool(meta.get("frame_descriptors")))
    model.load_state_dict(state)
    return model.eval(), meta
