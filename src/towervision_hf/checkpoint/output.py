"""A command's output never touches its inputs: it must not be, hold or lie inside any of them, and it is built in a
temporary folder (or file) beside its target, renamed into place only once complete. A failed run leaves no
half-written output behind, and an interrupted one leaves at most a hidden `.NAME.partial-*` folder.

Light on purpose (standard library only): every command's main checks its output before importing torch.
"""

import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
STAGE_FOLDER_HINT = "`towervision init` writes a stage-0 folder, `towervision train` the later stages"


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> Path:
    """`output` resolved; `ValueError` if it is, contains or lies inside one of the local `inputs` (names that are
    not local paths, such as Hub ids, and `None` are ignored)."""
    target = Path(output).resolve()
    for entry in inputs:
        if entry is None or not os.path.exists(entry):
            continue
        source = Path(entry).resolve()
        if target == source:
            raise ValueError(f"the output {output} is the input {entry}: write to another folder")
        if target in source.parents:
            raise ValueError(f"the output {output} contains the input {entry}: write to another folder")
        if source in target.parents:
            raise ValueError(f"the output {output} lies inside the input {entry}: write to another folder")
    return target


def check_new_folder(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """`check_output`, and `ValueError` unless `output` is missing or an empty folder (nothing there is replaced)."""
    target = check_output(output, inputs)
    if target.is_file() or (target.is_dir() and any(target.iterdir())):
        raise ValueError(f"the output {output} already exists and is not an empty folder: remove it or pick another")
    return target


def _partial(target: Path) -> Path:
    """A fresh hidden sibling of `target`, on the same file system, so that the final rename is atomic."""
    return target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"


@contextmanager
def staged_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside `output`; rename it to `output` when the block completes, delete it
    when the block raises. `output` must not overlap `inputs` and must be missing or empty (`check_new_folder`)."""
    target = check_new_folder(output, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _partial(target)
    staging.mkdir()
    try:
        yield staging
        check_new_folder(output)  # nothing else wrote there meanwhile
        if target.is_dir():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def staged_file(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path beside the file `output`; it replaces `output` when the block completes and is removed
    when the block raises. `output` must not overlap `inputs` (`check_output`)."""
    target = check_output(output, inputs)
    if target.is_dir():
        raise ValueError(f"the output {output} is a folder, not a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _partial(target)
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def check_local_or_hub(name: str, hint: str, kind: str = "file or folder") -> None:
    """`FileNotFoundError` when `name` is nothing here and cannot be a Hub id either (it has more than one `/`, starts
    with `.`, or its first part is a local folder): a mistyped or not-yet-written local path is reported as missing,
    with `hint` saying what it should be, instead of as a malformed Hub id."""
    if os.path.exists(name):
        return
    if HUB_ID.match(name) is None or os.path.isdir(name.split("/")[0]) or name.startswith("."):
        raise FileNotFoundError(f"{name}: no such {kind} ({hint})")


def check_model_folder(name: str, hint: str = STAGE_FOLDER_HINT) -> None:
    """`check_local_or_hub` for a model: a local one must be a folder."""
    if os.path.isfile(name):
        raise ValueError(f"{name} is a file, not a checkpoint folder")
    check_local_or_hub(name, hint, kind="folder")
