"""Sharded, resumable runs of `towervision data translate / synth / filter`: every output row written exactly once.

Shards: shard `i` of `n` takes the rows `shard_range(count, n, i)`, the split of `datasets.Dataset.shard(n, i)` with
its default `contiguous=True`: a contiguous block each, the first `count % n` shards one row longer. A shard writes
`data-0000i-of-0000n.jsonl` (and its `report-...json`) into the output folder, so the folder's `data*.jsonl` read in
name order (`read_jsonl`, the `local` source) are the rows of a single run, in its order; several machines may write
into one shared folder (media are content-addressed and written atomically). `towervision data merge OUT` checks that
every shard finished and sums their reports into `report.json`.

Resume: a shard's input rows are processed `chunk_size` at a time. After each chunk its output rows are appended and
fsynced, then the report is saved atomically with a `resume` record: the run's settings, a digest of its input, the
rows done and each output file's length at that point. Re-running the same command reads that record, cuts each
output file back to its recorded length (the rows of an unfinished chunk and a half-written last line, reported on
stderr and in the record) and goes on with the next row; a finished run is not run again. The report's counts add up
every run's.
"""

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .jsonl import jsonl_line
from .report import MAX_EXAMPLES, BuildReport


_SHARD_REPORT = re.compile(r"report-(\d{5})-of-(\d{5})\.json")


def shard_range(count: int, num_shards: int, index: int) -> range:
    """The rows of shard `index` of `num_shards`: `datasets.Dataset.shard(num_shards, index)`'s contiguous split."""
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"--shard-index {index} is not in [0, --num-shards {num_shards})")
    size, longer = divmod(count, num_shards)
    start = size * index + min(index, longer)
    return range(start, start + size + (1 if index < longer else 0))


def shard_name(stem: str, suffix: str, num_shards: int = 1, index: int = 0) -> str:
    """`data.jsonl` for a single run, `data-00002-of-00008.jsonl` for shard 2 of 8."""
    return f"{stem}{suffix}" if num_shards == 1 else f"{stem}-{index:05d}-of-{num_shards:05d}{suffix}"


def _save(path: Path, report: BuildReport, resume: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(
        json.dumps({**report.to_dict(), "resume": resume}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    os.replace(temporary, path)


def _read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable report ({error}); move it away to start this output again"
        ) from None


def _check_other_shards(out: Path, own_report: Path, settings: dict) -> None:
    for path in sorted(out.glob("report*.json")):
        resume = _read_report(path).get("resume") if path != own_report else None
        if resume and resume["settings"] != settings:
            raise ValueError(
                f"{out} holds {path.name}, written with other settings or shard count; use a new --out for this run"
            )


def _changed(saved: dict, settings: dict) -> str:
    keys = sorted(set(saved) | set(settings), key=str)
    return ", ".join(
        f"{key}: {saved.get(key)!r} -> {settings.get(key)!r}" for key in keys if saved.get(key) != settings.get(key)
    )


def _cut_back(path: Path, length: int) -> tuple[int, int]:
    """Truncate `path` to `length` bytes; returns (complete rows, bytes of a half-written row) cut off."""
    size = path.stat().st_size if path.exists() else 0
    if size < length:
        raise ValueError(
            f"{path} has {size} bytes, fewer than the {length} its report records: it was changed "
            f"outside this run, so it cannot be resumed exactly once; use a new --out"
        )
    if size == length:
        return 0, 0
    with open(path, "rb+") as handle:
        handle.seek(length)
        tail = handle.read()
        handle.truncate(length)
    half = len(tail) - tail.rfind(b"\n") - 1
    return tail.count(b"\n"), half


def run_resumable(
    out,
    units: list,
    process,
    *,
    report: BuildReport,
    settings: dict,
    key,
    files=("data",),
    num_shards: int = 1,
    shard_index: int = 0,
    chunk_size: int = 256,
    desc: str = "rows",
):
    """Run `process` over this shard's part of `units`, going on from the report in `out` when a run stopped.

    `process(chunks)` gets an iterator over lists of units and yields, for each chunk in order, `{file: rows}`
    (`file` one of `files`), having counted into `report` what it kept and skipped of that chunk and nothing more.
    `key(unit)` names a unit's input (the digest of a shard's keys guards a resume against a changed input);
    `settings` are the options that shape the output (a resume with other settings is refused). On a resume,
    `report` takes the counts of the runs before. Returns `(report, resume record)`; both are saved in `out`.
    """
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    out = Path(out)
    units = [units[index] for index in shard_range(len(units), num_shards, shard_index)]
    digest = hashlib.sha256("\n".join(key(unit) for unit in units).encode()).hexdigest()
    settings = {**settings, "num_shards": num_shards}
    paths = {name: out / shard_name(name, ".jsonl", num_shards, shard_index) for name in files}
    report_path = out / shard_name("report", ".json", num_shards, shard_index)
    out.mkdir(parents=True, exist_ok=True)
    _check_other_shards(out, report_path, settings)
    if report_path.exists():
        saved = _read_report(report_path)
        resume = saved.pop("resume", None)
        if resume is None:
            raise ValueError(f"{report_path} is not the report of a resumable run (a merged report?); use a new --out")
        if resume["settings"] != settings:
            raise ValueError(
                f"{out} holds a run with other settings ({_changed(resume['settings'], settings)}); "
                f"re-run the same command to resume it, or use a new --out"
            )
        if resume["input_sha256"] != digest:
            raise ValueError(
                f"the input of {report_path.name} changed since it was written ({resume['units']} -> "
                f"{len(units)} rows, or their ids / text); use a new --out"
            )
        report.restore(saved)
    else:
        for path in paths.values():
            if path.exists() and path.stat().st_size:
                raise ValueError(
                    f"{path} exists without its report {report_path.name}: not a run to resume; use a new --out"
                )
        resume = {
            "settings": settings,
            "input_sha256": digest,
            "shard": [shard_index, num_shards],
            "units": len(units),
            "done": 0,
            "complete": False,
            "files": {},
            "runs": [],
        }
    if resume["complete"]:
        print(f"{report_path}: all {len(units)} rows were done already", file=sys.stderr)
        return report, resume
    run = {"from": resume["done"], "to": resume["done"], "discarded_rows": 0, "half_written_row": False}
    for path in paths.values():
        rows, half = _cut_back(path, resume["files"].get(path.name, 0))
        if rows or half:
            run["discarded_rows"] += rows
            run["half_written_row"] |= bool(half)
            print(
                f"{path}: discarded {rows} rows written after the last checkpoint"
                + (f" and a half-written row ({half} bytes)" if half else "")
                + "; they are done again",
                file=sys.stderr,
            )
    resume["runs"].append(run)
    _save(report_path, report, resume)  # from here on the output folder is this run's, even before a first chunk
    chunks = [units[start : start + chunk_size] for start in range(resume["done"], len(units), chunk_size)]
    with contextlib.ExitStack() as stack:
        handles = {name: stack.enter_context(open(path, "ab")) for name, path in paths.items()}
        progress = stack.enter_context(
            tqdm(total=len(units), initial=resume["done"], desc=desc, unit="row", dynamic_ncols=True)
        )
        for chunk, outputs in zip(chunks, process(iter(chunks)), strict=True):
            for name, rows in outputs.items():
                handles[name].write("".join(jsonl_line(row, out, bring_media=True) for row in rows).encode())
            for handle in handles.values():
                handle.flush()
                os.fsync(handle.fileno())
            resume["done"] += len(chunk)
            run["to"] = resume["done"]
            resume["files"] = {paths[name].name: handle.tell() for name, handle in handles.items()}
            _save(report_path, report, resume)
            progress.update(len(chunk))
            skipped = sum(sum(reasons.values()) for reasons in report.skipped.values())
            progress.set_postfix(kept=report.total, skipped=skipped, refresh=False)
    resume["complete"] = True
    _save(report_path, report, resume)
    return report, resume


def format_runs(resume: dict) -> str:
    """One line: rows done over how many runs, and what resuming discarded."""
    runs = resume["runs"]
    discarded = sum(run["discarded_rows"] for run in runs)
    half = sum(run["half_written_row"] for run in runs)
    return f"{resume['done']} of {resume['units']} input rows done over {len(runs)} run(s)" + (
        f"; resuming discarded {discarded} rows of unfinished chunks and {half} half-written row(s)"
        if discarded or half
        else ""
    )


def merge_shards(out) -> BuildReport:
    """Check that every shard of the run in `out` finished and save their summed counts as `out/report.json`."""
    out = Path(out)
    shards = {}
    for path in sorted(out.glob("report-*-of-*.json")):
        match = _SHARD_REPORT.fullmatch(path.name)
        if match:
            shards[(int(match[1]), int(match[2]))] = _read_report(path)
    if not shards:
        raise FileNotFoundError(
            f"no report-XXXXX-of-XXXXX.json in {out}: run translate / synth / filter with --num-shards first"
        )
    counts = {total for _, total in shards}
    if len(counts) != 1:
        raise ValueError(f"{out} holds shards of runs with different --num-shards: {sorted(counts)}")
    num_shards = counts.pop()
    missing = [index for index in range(num_shards) if (index, num_shards) not in shards]
    unfinished = [index for (index, _), saved in sorted(shards.items()) if not saved["resume"]["complete"]]
    if missing or unfinished:
        raise ValueError(
            f"{out}: shards {missing} have no report and shards {unfinished} did not finish (of "
            f"{num_shards}); run them (the same command resumes an unfinished one)"
        )
    merged = None
    for _, saved in sorted(shards.items()):
        resume = saved.pop("resume")
        report = BuildReport().restore(saved)
        if merged is None:
            info = {key: value for key, value in saved.items() if key not in ("name", "total", "sources", "languages")}
            merged = BuildReport(saved["name"], **info, shards=num_shards, units=0)
        merged.info["units"] += resume["units"]
        for source in report.kept:
            merged.add_source(source)
            merged.kept[source] += report.kept[source]
            merged.skipped[source] += report.skipped[source]
            merged.examples[source] = (merged.examples[source] + report.examples[source])[:MAX_EXAMPLES]
    merged.save(out / "report.json")
    return merged
