"""Run results: one JSON file and one Markdown table per run, plus the per-item predictions as JSON lines."""

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version

from ..checkpoint.output import staged_file


@dataclass
class RunResult:
    """Everything needed to read and reproduce one benchmark run.

    `tables` maps a table name (e.g. "language pair", "language", "category") to `{row: {metric: value}}`;
    `skipped` counts the items left out, by reason; `notes` explains conventions and anything not computed.
    """

    task: str
    model: str
    data: dict
    settings: dict
    tables: dict[str, dict[str, dict]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def to_markdown(self) -> str:
        lines = [f"# {self.task}", "", f"- model: `{self.model}`"]
        data = ", ".join(f"{key}: {value}" for key, value in self.data.items() if value is not None)
        lines.append(f"- data: {data}")
        lines.append("- settings: " + ", ".join(f"{key}={value}" for key, value in self.settings.items()))
        for name, rows in self.tables.items():
            lines += ["", f"## By {name}", ""]
            columns = list(dict.fromkeys(column for row in rows.values() for column in row))
            lines.append("| " + " | ".join([name, *columns]) + " |")
            lines.append("|" + "---|" * (len(columns) + 1))
            for row_name, row in rows.items():
                lines.append("| " + " | ".join([row_name, *(_format(row.get(column)) for column in columns)]) + " |")
        lines += ["", "## Skipped items", ""]
        if self.skipped:
            lines += ["| reason | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(self.skipped.items())]
        else:
            lines.append("none")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str, predictions: list[dict] | None = None, inputs=()) -> dict[str, str]:
        """Write `<task>.json`, `<task>.md` and (if given) `<task>.predictions.jsonl`; return their paths. Each file
        replaces its previous version only once written whole, and none may be or lie inside one of `inputs`."""
        payload = asdict(self) | {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": _environment()}
        texts = {
            "json": json.dumps(payload, indent=2, ensure_ascii=False, default=str),
            "md": self.to_markdown(),
        }
        if predictions is not None:
            texts["predictions.jsonl"] = "".join(
                json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in predictions
            )
        paths = {}
        for kind, text in texts.items():
            paths[kind.split(".")[0]] = path = os.path.join(output_dir, f"{self.task}.{kind}")
            with staged_file(path, inputs) as staging:
                staging.write_text(text, encoding="utf-8")
        return paths


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _environment() -> dict:
    import torch
    import transformers

    try:
        package_version = version("towervision-hf")
    except PackageNotFoundError:
        package_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "towervision-hf": package_version,
    }
