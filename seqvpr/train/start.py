"""Training's starting weights that depend on the data: the pooled frame descriptor's whitening
(`fit_pooling`) and the NetVLAD layers' k-means centres (`initialise_vlad`, as the authors'
`modified_initialize_seqvlad_layer`)."""
from __future__ import annotations

import numpy as np
import torch

from seqvpr.data import join_rows
from seqvpr.models.layers import NetVLAD
from seqvpr.train.model import SequenceModel, device_of, frame_features, token_batches
from seqvpr.train.split_data import SplitData


KMEANS_DESCRIPTORS = 50_000  # the authors' descriptors_num, 100 random tokens per image


KMEANS_PER_IMAGE = 100


@torch.no_grad()
def fit_pooling(model: SequenceModel, data: SplitData, batch_size: int = 16) -> int:
    """Fit the model's GridWhitening (if any) on every frame of a training split (its database and
    query frames, through the trainable CCT blocks as they start), `batch_size` frames at a time,
    streamed (memory flat in the split's size); returns the frames used (0 without pooling).
    Training and the untrained rows fit it the same way."""
    if not model.pooled:
        return 0
    model.eval()

    used = model.pooling.fit(model.pooling.grid_means(model.final_tokens(batch)).cpu().numpy()
                             for tokens in (data.db_tokens, data.q_tokens)
                             for batch in token_batches(tokens, batch_size, device_of(model)))
    model.pooling.to(device_of(model))
    return used


@torch.no_grad()
def initialise_vlad(model: SequenceModel, data: SplitData, rng: np.random.Generator, seed: int = 0) -> int:
    """k-means initialisation of every NetVLAD on token-level features (SeqVLAD, STformer,
    Adapt-STformer and its ablations), on 100 random final tokens of up to 500 random training
    frames, as `modified_initialize_seqvlad_layer`. Returns how many layers it initialised."""
    layers = [m for m in model.head.modules() if isinstance(m, NetVLAD) and m.dim == data.db_tokens.shape[-1]]
    if not layers or model.pooled:
        return 0
    total = len(data.db_tokens) + len(data.q_tokens)
    picked = np.sort(rng.choice(total, min(total, KMEANS_DESCRIPTORS // KMEANS_PER_IMAGE), replace=False))
    tokens = frame_features(model, join_rows(data.db_tokens, data.q_tokens, picked))
    per_frame = min(KMEANS_PER_IMAGE, tokens.shape[1])
    descriptors = np.concatenate([t[rng.choice(len(t), per_frame, replace=False)]
                                  for start in range(0, len(tokens), 16)  # 16 frames' float32 tokens at a time
                                  for t in np.asarray(tokens[start:start + 16], dtype=np.float32)])
    for layer in layers:
        layer.init_from_descriptors(descriptors, seed=seed)
    return len(layers)
