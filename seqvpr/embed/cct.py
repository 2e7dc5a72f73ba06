"""CCT-14/7x2 at 384 px (`cct_14_7x2_384`), the frame encoder of SeqVLAD, STformer and Adapt-STformer.

Module and parameter names follow the official Compact-Transformers layout (SHI-Labs
`src/cct.py`, `src/utils/tokenizer.py`, `src/utils/transformers.py`), so the official checkpoint
loads with `strict=True`. As in the Adapt-STformer code base (its training scripts,
`sbatch_files/train/cct_adapt_stformer_train.sbatch`, pass `--trunc_te 8 --freeze_te 1`), only the
first `num_layers` = 8 transformer blocks are kept for features, and the sequence pooling is
skipped: the encoder returns the (B, 576, 384) token map after the final LayerNorm.

The embedding cut follows the authors' `--freeze_te` (`svpr/models/encoder.py`, `SeqVladModel`):
the tokenizer, the positional embedding, blocks 0..freeze_te and the final LayerNorm are frozen,
blocks with index > freeze_te train with the sequence head. `forward_cut` returns the tokens after
the frozen blocks (what the embedding cache keeps) and `tail` the trainable rest.
"""
import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqvpr.hashing import file_sha256

log = logging.getLogger(__name__)

EMBED_DIM = 384
NUM_HEADS = 6
MLP_RATIO = 3
FULL_DEPTH = 14
IMAGE_SIZE = 384
TOKENS = (IMAGE_SIZE // 16) ** 2
DEFAULT_LAYERS = 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Tokenizer(nn.Module):
    """Two conv -> ReLU -> max-pool stages: 384 px -> 24 x 24 tokens of width 384."""

    def __init__(self, channels=(3, 64, EMBED_DIM)):
        super().__init__()
        self.conv_layers = nn.Sequential(*[
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=7, stride=2, padding=3, bias=False),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
            for c_in, c_out in zip(channels[:-1], channels[1:])
        ])

    def forward(self, x):
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim=EMBED_DIM, heads=NUM_HEADS):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    """CCT's block: pre-norm attention residual, then norm1 and a GELU MLP residual."""

    def __init__(self, dim=EMBED_DIM, heads=NUM_HEADS, mlp_ratio=MLP_RATIO):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.linear1 = nn.Linear(dim, dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.linear2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x):
        x = x + self.self_attn(self.pre_norm(x))
        x = self.norm1(x)
        return x + self.linear2(F.gelu(self.linear1(x)))


class TransformerClassifier(nn.Module):
    def __init__(self, depth=FULL_DEPTH, num_classes=1000):
        super().__init__()
        self.attention_pool = nn.Linear(EMBED_DIM, 1)
        self.positional_emb = nn.Parameter(torch.zeros(1, TOKENS, EMBED_DIM))
        self.blocks = nn.ModuleList([EncoderLayer() for _ in range(depth)])
        self.norm = nn.LayerNorm(EMBED_DIM)
        self.fc = nn.Linear(EMBED_DIM, num_classes)


class CCT384(nn.Module):
    """Feature extractor: images (B, 3, 384, 384) normalised with ImageNet statistics -> (B, 576, 384)."""

    def __init__(self, num_layers: int = DEFAULT_LAYERS):
        super().__init__()
        if not 1 <= num_layers <= FULL_DEPTH:
            raise ValueError(f"num_layers must be in 1..{FULL_DEPTH}, got {num_layers}")
        self.num_layers = num_layers
        self.tokenizer = Tokenizer()
        self.classifier = TransformerClassifier()

    def forward(self, images):
        return self.forward_cut(images, self.num_layers)[1]

    def forward_cut(self, images, cut: int):
        """(tokens after the first `cut` blocks, final tokens); with every block frozen (cut ==
        num_layers) both are the final, normalised tokens."""
        x = self.tokenizer(images) + self.classifier.positional_emb
        at_cut = x
        for index, block in enumerate(self.classifier.blocks[: self.num_layers]):
            x = block(x)
            if index + 1 == cut:
                at_cut = x
        final = self.classifier.norm(x)
        return (final if cut == self.num_layers else at_cut), final

    def tail(self, cut: int) -> "CCTTail | None":
        """A copy of the blocks after the cut and the final (frozen) LayerNorm; None when every block is frozen."""
        if cut == self.num_layers:
            return None
        tail = CCTTail(self.num_layers - cut)
        tail.blocks.load_state_dict(nn.ModuleList(self.classifier.blocks[cut: self.num_layers]).state_dict())
        tail.norm.load_state_dict(self.classifier.norm.state_dict())
        return tail


class CCTTail(nn.Module):
    """The trainable CCT blocks after the embedding cut, then the final LayerNorm, which stays
    frozen as in the authors' code (only blocks with index > freeze_te are unfrozen)."""

    def __init__(self, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList([EncoderLayer() for _ in range(blocks)])
        self.norm = nn.LayerNorm(EMBED_DIM)
        self.norm.requires_grad_(False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def frozen_blocks(freeze_te: int, num_layers: int = DEFAULT_LAYERS) -> int:
    """Blocks before the cut (the authors' freeze_te + 1); freeze_te = num_layers - 1 freezes all."""
    if not -1 <= freeze_te <= num_layers - 1:
        raise ValueError(f"freeze_te must be in -1..{num_layers - 1} for {num_layers} blocks, got {freeze_te}")
    return freeze_te + 1


def weights_identity(checkpoint: str | Path | None, seed: int = 0) -> str:
    """The checkpoint's SHA-256, or `random-init-<seed>` without one. Assets ask for it many times per
    run (cache namespaces, checkpoint records, table notes), so it is hashed once per file state."""
    if checkpoint:
        stat = Path(checkpoint).stat()
        return _checkpoint_sha256(str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns)
    return f"random-init-{seed}"


@functools.lru_cache(maxsize=16)
def _checkpoint_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def build_cct384(num_layers: int = DEFAULT_LAYERS, checkpoint: str | Path | None = None, seed: int = 0) -> tuple[CCT384, str]:
    """The encoder and its weights identity."""
    torch.manual_seed(seed)
    model = CCT384(num_layers)
    weights = weights_identity(checkpoint, seed)
    if checkpoint:
        state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state, strict=True)
    else:
        _init_random(model)
        log.warning("no CCT checkpoint given: using seeded random weights (%s)", weights)
    return model.eval(), weights


def build_cct_tail(freeze_te: int, num_layers: int = DEFAULT_LAYERS, checkpoint: str | Path | None = None,
                   seed: int = 0) -> CCTTail | None:
    """The trainable blocks after the cut, with the same starting weights as the embedding encoder."""
    cut = frozen_blocks(freeze_te, num_layers)
    return build_cct384(num_layers, checkpoint, seed)[0].tail(cut) if cut < num_layers else None


def _init_random(model: CCT384) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    nn.init.trunc_normal_(model.classifier.positional_emb, std=0.2)
