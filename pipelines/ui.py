"""`seqvpr ui`: `dagster dev` on a pipeline home's instance, so the UI shows (and can re-execute)
the runs of `seqvpr run` on that home, and its runs write to that home."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seqvpr ui", description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("SEQVPR_HOME", "."), help="pipeline home, as for seqvpr run")
    parser.add_argument("--port", type=int, default=3000, help="the UI's port on 127.0.0.1")
    args = parser.parse_args(argv)
    from pipelines.run import dagster_home

    home = Path(args.home).resolve()
    if home.exists() and not home.is_dir():
        print(f"error: --home: {home} is a file, not a folder", file=sys.stderr)
        return 2
    home.mkdir(parents=True, exist_ok=True)
    instance = dagster_home(str(home))  # created once, under the lock `seqvpr run` takes too
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    env = {**os.environ, "SEQVPR_HOME": str(home), "DAGSTER_HOME": str(instance),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"dagster dev on {home} (instance {instance}) at http://127.0.0.1:{args.port}", flush=True)
    command = [dagster, "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(args.port)]
    try:
        return subprocess.run(command, cwd=ROOT, env=env).returncode
    except KeyboardInterrupt:
        return 130
