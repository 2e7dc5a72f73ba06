"""Sequence extraction cost of Adapt-STformer vs STformer vs SeqVLAD, and deformable (K=8) vs dense
(K=576) spatial attention, measured side by side in one run (full size: L=5, 576 tokens, D=384).

    .venv/bin/python benchmarks/bench_models.py [--device cpu|cuda] [--repeats 5]
"""
import argparse

import torch

from seqvpr.metrics import extraction_cost
from seqvpr.models import build_model
from seqvpr.models.layers import DeformableEncoderLayer, DenseCrossEncoderLayer, grid_reference_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    sequence = torch.randn(1, 5, 576, 384, device=device)
    costs = {}
    for name in ("adapt_stformer", "stformer", "seqvlad"):
        costs[name] = extraction_cost(build_model(name).to(device), sequence, args.repeats)
        c = costs[name]
        print(f"{name:15s} {c['seconds_per_sequence'] * 1000:8.1f} ms/seq  {c['peak_memory_mb']:7.1f} MB  {c['parameters']:>10,} params")
    a, s = costs["adapt_stformer"], costs["stformer"]
    print(f"Adapt-STformer / STformer: time {a['seconds_per_sequence'] / s['seconds_per_sequence']:.2f}, "
          f"memory {a['peak_memory_mb'] / s['peak_memory_mb']:.2f}")

    frame = sequence[:, 0]
    reference = grid_reference_points(24, device).expand(1, 576, 2)

    class Spatial(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, reference, x, (24, 24))

    deformable = extraction_cost(Spatial(DeformableEncoderLayer(384)).to(device), frame, args.repeats)
    dense = extraction_cost(Spatial(DenseCrossEncoderLayer(384)).to(device), frame, args.repeats)
    print(f"spatial attention per frame: deformable K=8 {deformable['seconds_per_sequence'] * 1000:.1f} ms, "
          f"dense K=576 {dense['seconds_per_sequence'] * 1000:.1f} ms, dense/deformable time "
          f"{dense['seconds_per_sequence'] / deformable['seconds_per_sequence']:.2f}, memory "
          f"{dense['peak_memory_mb'] / max(deformable['peak_memory_mb'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
