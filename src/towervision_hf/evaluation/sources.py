"""Benchmark data: loaded with training's loader (`towervision_hf.data.loading`: a Hub id, the default everywhere, a
Hub-layout folder, a `save_to_disk` folder or a single file; a single file or saved `Dataset` is the split `test`).
Tasks cast media columns to `decode=False` (`undecoded`) so that a corrupt image or video becomes a counted skip
instead of an exception inside `datasets`.
"""

from datasets import Dataset, DatasetDict, Image, Video
from tqdm.auto import tqdm

from ..data import loading


def load_splits(data: str, config: str | None = None, revision: str | None = None) -> tuple[DatasetDict, dict]:
    """All splits of `data` and a provenance record (source, kind, config, revision, rows per split); a single file
    or saved `Dataset` is the split `test`."""
    return loading.load_splits(data, config, revision, single_split="test")


def undecoded(split: Dataset, column: str) -> Dataset:
    """`split` with its `Image` / `Video` column `column` left undecoded (`{"bytes", "path"}` dicts), so that media
    are decoded per item by `media` and a broken file becomes a counted skip."""
    feature = split.features.get(column)
    if isinstance(feature, (Image, Video)) and feature.decode:
        return split.cast_column(column, type(feature)(decode=False))
    return split


def iter_rows(split: Dataset, chunk_size: int, limit: int | None = None, desc: str | None = None, result=None):
    """Rows of `split` as lists of dicts, `chunk_size` at a time (at most `limit` rows in total).

    With `desc`, a progress bar (rows per second, and the skips of `result`, a `RunResult`, so far) advances as each
    chunk is processed by the caller."""
    total = split.num_rows if limit is None else min(limit, split.num_rows)
    with tqdm(total=total, desc=desc, unit="row", disable=desc is None, dynamic_ncols=True) as progress:
        for start in range(0, total, chunk_size):
            columns = split[start : min(start + chunk_size, total)]
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
            yield rows
            progress.update(len(rows))
            if result is not None:
                progress.set_postfix(skipped=sum(result.skipped.values()), refresh=False)


def require_columns(split: Dataset, columns, what: str) -> None:
    """ValueError naming the missing columns of `what` and the columns it does have."""
    missing = [column for column in columns if column not in split.column_names]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; the data has {split.column_names}")
