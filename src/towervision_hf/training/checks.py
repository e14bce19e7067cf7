"""Checks before a run starts: a stage whose data holds no sample it can train on fails at once, with the counts and
the reason, instead of training on filler batches (or failing deep inside TRL) and reporting success."""

from collections.abc import Iterable

from .collator import TowerVisionCollator


def require_trainable_sample(rows: Iterable[dict], collator: TowerVisionCollator, measure, max_length: int | None):
    """Read `rows` until one would train: it has an assistant turn with text (the collator's rule) and, measured by
    `measure` (a `packing.SampleMeasure`), fits `max_length`. With the usual data that is the first row; a `ValueError`
    with the counts, the longest sample and `max_length` when none does.

    Malformed rows, undecodable media and, under `untrainable="error"`, untrainable rows raise as they would in
    training.
    """
    seen = untrainable = over = 0
    longest, longest_id = 0, None
    for row in rows:
        seen += 1
        if not collator._trainable_conversations([row])[0]:
            untrainable += 1
            continue
        tokens, _ = measure(row)
        if max_length is None or tokens <= max_length:
            return
        over += 1
        if tokens > longest:
            longest, longest_id = tokens, row.get("id", seen - 1)
    if seen == 0:
        raise ValueError("no sample to train on: the dataset is empty")
    reasons = []
    if over:
        reasons.append(
            f"{over} longer than max_length={max_length} (the longest, sample {longest_id!r}, is {longest} tokens: "
            "raise max_length, or lower max_tiles / num_frames)"
        )
    if untrainable:
        reasons.append(f"{untrainable} would train on nothing (no assistant text; skipped by untrainable: skip)")
    raise ValueError(f"no sample to train on: of {seen} samples, {' and '.join(reasons)}")
