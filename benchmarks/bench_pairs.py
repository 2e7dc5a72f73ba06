"""Time pair computation (KD-tree positives, non-trivial positives, cached negatives) on synthetic
trajectories of N database and N query positions, and compare the growth with N log N.

    .venv/bin/python benchmarks/bench_pairs.py [--sizes 10000 30000 100000] [--negatives 100]

Positions: a random-walk route with ~2 m steps (as after 2 m frame separation); queries are the
same route offset by up to 3 m of GPS noise. Headings follow the route, so the 30 degree rule is
timed too (--heading).
"""
import argparse
import math
import time

import numpy as np

from seqvpr.pairs import PairRules, compute_pairs


def route(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    turn = np.cumsum(rng.normal(0, 0.05, n))
    steps = np.stack([np.sin(turn), np.cos(turn)], 1) * 2.0
    xy = np.cumsum(steps, axis=0) + [600000.0, 5700000.0]
    return xy, np.degrees(turn) % 360.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--negatives", type=int, default=100, help="negative candidates per query")
    parser.add_argument("--heading", action="store_true", help="also apply the 30 degree heading rule")
    args = parser.parse_args()
    rules = PairRules(radius=10.0, nontrivial_radius=5.0, negative_radius=10.0,
                      max_heading_deg=30.0 if args.heading else None, negatives_per_query=args.negatives)
    rows = []
    for n in args.sizes:
        db_xy, db_heading = route(n, seed=0)
        rng = np.random.default_rng(1)
        q_xy = db_xy + rng.uniform(-3, 3, db_xy.shape)
        q_heading = (db_heading + rng.uniform(-20, 20, n)) % 360.0
        start = time.perf_counter()
        pairs = compute_pairs(db_xy, q_xy, rules, db_heading=db_heading, query_heading=q_heading)
        seconds = time.perf_counter() - start
        mean_pos = np.mean([len(p) for p in pairs.positives])
        rows.append((n, seconds, mean_pos, pairs.queries_without_positives()))
    base_n, base_t = rows[0][0], rows[0][1]
    print(f"{'N':>8} {'seconds':>8} {'time ratio':>10} {'NlogN ratio':>11} {'mean pos':>8} {'no pos':>6}")
    for n, seconds, mean_pos, missing in rows:
        nlogn = (n * math.log(n)) / (base_n * math.log(base_n))
        print(f"{n:>8} {seconds:>8.2f} {seconds / base_t:>10.2f} {nlogn:>11.2f} {mean_pos:>8.1f} {missing:>6}")


if __name__ == "__main__":
    main()
