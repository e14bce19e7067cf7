"""docs/paper-fidelity.md, sections "Architecture and training" and "Evaluation": every row that names a setting
(`file: key`) holds the value of its `ours` column, so the table and the recipes / defaults cannot drift apart."""

import importlib
import re
from pathlib import Path

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Architecture and training", "Evaluation")
HEADER = "| item | paper (where) | ours | file: key | verdict |"


def table_rows(section: str) -> list[dict]:
    text = (ROOT / "docs" / "paper-fidelity.md").read_text()
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)
    lines = [line for line in body.splitlines() if line.startswith("|")]
    assert lines[0] == HEADER and set(lines[1]) <= set("|-")
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        rows.append(dict(zip(("item", "paper", "ours", "location", "verdict"), cells)))
    return rows


def load_setting(location: str):
    """The value named by `path/file.yaml: dotted.key` or `src/package/module.py: CONSTANT.dotted.key`."""
    path, key = (part.strip() for part in location.split(": ", 1))
    first, *rest = key.split(".")
    if path.endswith((".yaml", ".yml")):
        value = yaml.safe_load((ROOT / path).read_text())[first]
    else:
        module = importlib.import_module(path.removeprefix("src/").removesuffix(".py").replace("/", "."))
        value = getattr(module, first)
    for part in rest:
        value = value[part]
    return value


def as_ours(value, ours: str) -> bool:
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value] == [item.strip() for item in ours.split(",")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(ours) == float(value)
    return str(value) == ours


ROWS = [(section, row) for section in SECTIONS for row in table_rows(section)]


@pytest.mark.parametrize("section, row", ROWS, ids=[f"{section}: {row['item']}" for section, row in ROWS])
def test_rows_are_complete_and_settings_match_the_code(section, row):
    assert row["paper"] and row["ours"] and row["verdict"], row
    assert row["verdict"].startswith(("match", "our choice", "deviation")), row["verdict"]
    if row["location"] != "—":
        assert as_ours(load_setting(row["location"]), row["ours"]), (row["location"], row["ours"])


def test_every_section_names_settings():
    for section in SECTIONS:
        assert sum(row["location"] != "—" for row in table_rows(section)) >= 3
