"""Checkpoint files: the kept weights, the weights training started from and what is needed to
rebuild the model (`save_checkpoint`, `load_checkpoint`), written atomically."""
from __future__ import annotations

import io

import torch

from seqvpr.atomic import atomic_write_bytes
from seqvpr.embed.cct import CCTTail
from seqvpr.train.model import build_sequence_model


def save_checkpoint(path, model_name: str, state_dict: dict, meta: dict, start_state_dict: dict | None = None) -> None:
    """meta must hold seq_len, model_kwargs and tail_blocks (CCT blocks trained after the cut), and
    may hold frame_descriptors ({"backbone", "weights"} of the published frame descriptors it read).
    start_state_dict: the weights training started from, kept so the results can show what the
    k-means initialisation alone gives."""
    buf = io.BytesIO()
    checkpoint = {"model": model_name, "state_dict": {k: v.cpu() for k, v in state_dict.items()}, "meta": meta}
    if start_state_dict is not None:
        checkpoint["start_state_dict"] = {k: v.cpu() for k, v in start_state_dict.items()}
    torch.save(checkpoint, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, start: bool = False):
    """(model, meta) of a checkpoint; start: with the weights its training started from instead
    ((None, meta) when it has none)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    weights = checkpoint.get("start_state_dict") if start else checkpoint["state_dict"]
    if weights is None:
        return None, meta
    tail = CCTTail(meta["tail_blocks"]) if meta["tail_blocks"] else None
    model = build_sequence_model(checkpoint["model"], meta["seq_len"], meta["model_kwargs"], tail,
                                 published_features=bool(meta.get("frame_descriptors")))
    model.load_state_dict(weights)
    return model.eval(), meta
