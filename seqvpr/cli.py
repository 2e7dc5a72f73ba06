"""`seqvpr` command line: `seqvpr run` materialises the pipeline, `seqvpr ui` opens it in `dagster dev`,
`seqvpr synth` writes a mini-world, `seqvpr export` writes the drop-in exports (seqvpr/exports/cli.py)."""
import sys

from seqvpr.errors import DataError


def main(argv: list[str] | None = None) -> int:
    """The command's exit status; an OS error or bad input outside the pipeline's tasks (a home
    that is a file, a read-only or full disk) is printed naming the file, never as a traceback."""
    try:
        return _command(argv)
    except (OSError, DataError) as err:
        print(f"error: {err.filename}: {err.strerror}" if isinstance(err, OSError) and err.filename else f"error: {err}",
              file=sys.stderr)
        return 1


def _command(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else "--help"
    if command == "run":
        from pipelines.run import main as run_main

        return run_main(argv)
    if command == "ui":
        from pipelines.ui import main as ui_main

        return ui_main(argv)
    if command == "synth":
        from seqvpr.synthetic.__main__ import main as synth_main

        return synth_main(argv)
    if command == "export":
        from seqvpr.exports.cli import main as export_main

        return export_main(argv)
    print("usage: seqvpr {run,ui,synth,export} [options]   (seqvpr run --help)")
    return 0 if command in ("--help", "-h") else 2


if __name__ == "__main__":
    sys.exit(main())
