"""What a run shows: one line per finished task, a progress bar per stage, the summary table, and
the root cause of a failure (never Dagster's wrapper)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskResult:
    key: str
    partition: str | None
    seconds: float = 0.0
    written: dict[str, int] = field(default_factory=dict)  # e.g. {"frames": 40} or {"samples": 94}
    skips: int = 0  # counted skips (dropped frames)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    fresh: bool = False
    reason: str = ""  # why it ran: what made it stale (pipelines/state.py), or "forced"
    run_id: str | None = None

    @property
    def name(self) -> str:
        return f"{self.key}[{self.partition}]" if self.partition else self.key


def _plain(value):
    return getattr(value, "value", value)


def summarise_metadata(metadata: dict) -> tuple[dict[str, int], int]:
    """What a materialisation wrote (frames, embeddings, samples, split rows, files) and its counted skips."""
    values = {k: _plain(v) for k, v in metadata.items()}
    written = {}
    samples = sum(v for k, v in values.items() if k.endswith("_samples") and isinstance(v, int))
    if samples:
        written["samples"] = samples
    for key, label in (("frames", "frames"), ("embedded", "embedded"), ("files", "files")):
        if isinstance(values.get(key), int) and label not in written:
            written[label] = values[key]
    if isinstance(values.get("counts"), dict):
        written["rows"] = sum(values["counts"].values())
    if isinstance(values.get("struct_files"), list):
        written["struct files"] = len(values["struct_files"])
    dropped = values.get("dropped")
    skips = sum(dropped.values()) if isinstance(dropped, dict) else 0
    return written, skips


def root_cause(error) -> str:
    """The innermost error of a Dagster failure: the DataError text (file and problem), not the wrapper."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = error.message.strip().splitlines()[0] if error.message.strip() else ""
    qualified, _, rest = message.partition(": ")
    if qualified.rsplit(".", 1)[-1] == error.cls_name:  # Dagster writes "seqvpr.errors.DataError: ..."
        message = rest
    return f"{error.cls_name}: {message}"


def collect(result, task: TaskResult) -> TaskResult:
    """Fill ``task`` from a Dagster execution result."""
    task.run_id = result.run_id
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        written, skips = summarise_metadata(metadata)
        for label, count in written.items():
            task.written[label] = task.written.get(label, 0) + count
        task.skips += skips
    broken = []
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            problems = _plain(evaluation.metadata.get("problems")) or {k: _plain(v) for k, v in evaluation.metadata.items()}
            task.failed_checks.append(f"{evaluation.check_name} ({evaluation.severity.value}): {problems}")
            if evaluation.severity.value == "ERROR":  # the output is wrong: nothing downstream may use it
                broken.append(f"asset check {evaluation.check_name} failed: {problems}")
    if broken:  # a failed blocking check also fails the step: name the check, not the step's error
        task.error = "; ".join(broken)
    elif not result.success:
        failure = next((e for e in result.all_events if e.is_failure and getattr(e.event_specific_data, "error", None)), None)
        task.error = root_cause(failure.event_specific_data.error) if failure else "failed; see the run's log"
    return task


class Progress:
    """One tqdm bar per stage (asset group) on a terminal, one line per finished task everywhere."""

    def __init__(self, stages: dict[str, int], out):
        from tqdm import tqdm

        self.out, self.left = out, dict(stages)
        self.bars = {stage: tqdm(total=total, desc=stage, unit="task", file=out, disable=None, leave=False)
                     for stage, total in stages.items()}

    def done(self, stage: str, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=self.out)
        self.bars[stage].update(1)
        self.left[stage] -= 1
        if self.left[stage] == 0:
            self.bars[stage].close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def task_line(task: TaskResult) -> str:
    if task.fresh:
        return f"  = {task.name}: fresh, skipped"
    if task.error and task.run_id is None and not task.seconds:
        return f"  x {task.name}: {task.error}"
    if task.error:
        return f"  x {task.name}: FAILED after {task.seconds:.1f}s: {task.error}"
    written = ", ".join(f"{n} {label}" for label, n in task.written.items())
    skips = f", {task.skips} skipped" if task.skips else ""
    checks = f"; CHECK FAILED: {'; '.join(task.failed_checks)}" if task.failed_checks else ""
    reason = f" ({task.reason})" if task.reason else ""
    return f"  + {task.name} in {task.seconds:.1f}s{': ' + written if written else ''}{skips}{checks}{reason}"


def summary_table(tasks: list[TaskResult]) -> str:
    """Per asset: partitions run (and skipped as fresh), seconds, what was written, counted skips."""
    rows = {}
    for task in tasks:
        row = rows.setdefault(task.key, {"run": 0, "fresh": 0, "failed": 0, "seconds": 0.0, "written": {}, "skips": 0})
        row["fresh" if task.fresh else "failed" if task.error else "run"] += 1
        row["seconds"] += task.seconds
        for label, n in task.written.items():
            row["written"][label] = row["written"].get(label, 0) + n
        row["skips"] += task.skips
    header = ("asset", "partitions", "seconds", "written", "skips")
    lines = [header]
    for key, row in rows.items():
        parts = f"{row['run']} run" + (f", {row['fresh']} fresh" if row["fresh"] else "") + (f", {row['failed']} FAILED" if row["failed"] else "")
        written = ", ".join(f"{n} {label}" for label, n in row["written"].items()) or "-"
        lines.append((key, parts, f"{row['seconds']:.1f}", written, str(row["skips"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
