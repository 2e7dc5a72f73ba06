import os
import signal
import subprocess
import sys
import textwrap

import pytest

from seqvpr.atomic import atomic_dir, atomic_open, atomic_write_bytes


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"complete")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"complete"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_written_file_is_world_readable(tmp_path):
    target = tmp_path / "a" / "out.txt"
    atomic_write_bytes(target, b"x")
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    target = tmp_path / "big.bin"
    script = textwrap.dedent(
        f"""
        import sys, time
        from seqvpr.atomic import atomic_open
        with atomic_open({str(target)!r}) as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = os.listdir(tmp_path)
    assert all(name.startswith(".big.bin.") and name.endswith(".partial") for name in leftovers)


def test_atomic_dir_swaps_whole_folder(tmp_path):
    target = tmp_path / "world"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("two")
            raise ValueError("bad input")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_atomic_remove_takes_the_name_away_at_once(tmp_path):
    from seqvpr.atomic import atomic_remove

    folder = tmp_path / "test"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "shard-000000.tar").write_bytes(b"x")
    (tmp_path / "keep.txt").write_text("k")
    assert atomic_remove(folder) and not folder.exists()
    assert atomic_remove(tmp_path / "keep.txt") and sorted(os.listdir(tmp_path)) == []
    assert atomic_remove(folder) is False
