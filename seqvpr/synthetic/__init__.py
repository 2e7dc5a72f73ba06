"""Synthetic mini-worlds written in each dataset's exact on-disk format.

`generate(dataset, root, seed)` writes the dataset under `root` exactly as the real one is laid
out, so the loaders cannot tell it from real data. Ground truth that the real datasets do not ship
(true poses, undistorted images) goes to `truth_root`, outside the dataset folder.

Safety. RobotCar's camera models go to ``<sdk_root>/models`` (default
``<root>/../robotcar-dataset-sdk/models``), the place a user keeps a checkout of the SDK: that folder
is replaced only when a stamp says the generator wrote it and nothing in it changed since
(`seqvpr.stamps.claim_folder`), otherwise generation stops naming it. `seqvpr synth` applies the same
rule to every folder it writes (`write_world`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from seqvpr.layout import DATASETS


def world_stamp(seed: int, scale: dict) -> dict:
    """What a synthetic folder's source stamp records: seed, scale and the generator code's digest,
    so a changed generator regenerates the world."""
    digest = hashlib.sha256()
    for src in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(src.name.encode() + b"\0" + src.read_bytes())
    scale = {k: str(v) if isinstance(v, Path) else v for k, v in sorted(scale.items())}
    return {"source": "synthetic", "seed": seed, "scale": scale, "generator": digest.hexdigest()[:16]}


def _models_dir(root: Path, scale: dict) -> Path | None:
    """The SDK models folder a RobotCar world writes outside ``root`` (None: inside it)."""
    models = Path(scale.get("sdk_root") or root.parent / "robotcar-dataset-sdk") / "models"
    inside = Path(os.path.abspath(root)) in Path(os.path.abspath(models)).parents
    return None if inside else models


def _claim_models(models: Path, stamp: dict) -> None:
    """Refuse to replace a models folder the generator did not write. A folder of exactly the files
    it writes and no stamp is one made before stamps existed, and is claimed."""
    from seqvpr.stamps import claim_folder, stamp_path, write_source_stamp
    from seqvpr.synthetic.robotcar import SDK_MODELS

    ours = {f"{m}{suffix}" for m in SDK_MODELS.values() for suffix in (".txt", "_distortion_lut.bin")}
    if models.is_dir() and not stamp_path(models).exists() and {p.name for p in models.iterdir()} <= ours:
        write_source_stamp(models, {"source": "synthetic", "seed": None})
    claim_folder(models, stamp, hint="or set sdk_root to another folder (the camera models of a robotcar-dataset-sdk "
                                     "checkout are never replaced)")


def check_scale(dataset: str, scale: dict):
    """The generator module of ``dataset``, once ``scale`` is known to hold only its parameters
    (ValueError with "did you mean" otherwise)."""
    import importlib
    import inspect

    from seqvpr.errors import unknown_name

    if dataset not in DATASETS:
        raise ValueError(unknown_name("dataset", dataset, DATASETS))
    module = importlib.import_module(f"seqvpr.synthetic.{dataset}")
    known = [name for name in inspect.signature(module.generate).parameters if name not in ("root", "seed", "truth_root")]
    for name in scale:
        if name not in known:
            raise ValueError(f"{dataset} scale: {unknown_name('parameter', name, known)}")
    return module


def generate(dataset: str, root: str | Path, seed: int = 0, truth_root: str | Path | None = None, **scale) -> dict:
    """Write the synthetic `dataset` under `root`; returns a summary (counts per traversal).

    Raises ValueError for an unknown dataset or scale parameter, DataError (a ValueError) when the
    RobotCar models folder holds files the generator did not write."""
    module = check_scale(dataset, scale)
    root = Path(root)
    truth_root = Path(truth_root) if truth_root is not None else root.parent / f"{root.name}_truth"
    models = _models_dir(root, scale) if dataset == "robotcar" else None
    if models is not None:
        _claim_models(models, world_stamp(seed, scale))
    summary = module.generate(root, seed=seed, truth_root=truth_root, **scale)
    if models is not None:
        from seqvpr.stamps import write_source_stamp

        write_source_stamp(models, world_stamp(seed, scale))
    return summary


def write_world(dataset: str, out: Path, truth: Path, seed: int = 0, **scale) -> dict | None:
    """`seqvpr synth`: the world of ``dataset`` at ``out/<dataset>`` and its truth at
    ``truth/<dataset>``, each folder replaced only if a stamp says this generator wrote it (the
    pipeline's raw-stage rule); None when the same seed, scale and generator already wrote both.
    The stamps are those of the raw stage, so a home's ``data/raw`` written here is taken as its own."""
    from seqvpr.stamps import claim_folder, write_source_stamp

    check_scale(dataset, scale)  # a wrong parameter is refused before any folder is touched
    stamp = world_stamp(seed, scale)
    hint = "or write the synthetic world to another --out"
    root, truth_root = Path(out) / dataset, Path(truth) / dataset
    done = [claim_folder(folder, stamp, hint=hint) for folder in (root, truth_root)]
    if all(done):
        return None
    summary = generate(dataset, root, seed=seed, truth_root=truth_root, **scale)
    for folder in (root, truth_root):
        write_source_stamp(folder, stamp)
    return summary
