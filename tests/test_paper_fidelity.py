"""docs/paper-fidelity.md against the repository: every `file: key` of its tables must still hold the `ours` value."""

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "paper-fidelity.md"
HEADER = ["item", "paper (where)", "ours", "file: key", "verdict"]


def table_rows() -> list[dict]:
    """Rows of every `| item | paper (where) | ours | file: key | verdict |` table in the document."""
    rows, columns = [], None
    for number, line in enumerate(TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells == HEADER:
            columns = cells
        elif columns and not set("".join(cells)) <= set("-: "):
            assert len(cells) == len(columns), f"docs/paper-fidelity.md:{number}: {len(cells)} cells, expected 5"
            rows.append({"line": number, **dict(zip(columns, cells))})
    return rows


def lookup_yaml(path: Path, key: str):
    value = yaml.safe_load(path.read_text(encoding="utf-8"))
    for segment in key.split("."):
        if isinstance(value, list):
            named = [item for item in value if isinstance(item, dict) and item.get("name") == segment]
            if named:
                value = named[0]
            elif segment.isdigit() and int(segment) < len(value):
                value = value[int(segment)]
            else:
                raise KeyError(f"no element named {segment!r}")
        elif isinstance(value, dict) and segment in value:
            value = value[segment]
        else:
            raise KeyError(f"no key {segment!r}")
    return value


def lookup(reference: str):
    """The value that a `file: key` cell names."""
    file, _, key = reference.strip("`").partition(": ")
    path = ROOT / file
    assert path.is_file(), f"{file} does not exist"
    if path.suffix in (".yaml", ".yml"):
        return lookup_yaml(path, key)
    assert path.suffix == ".py" and file.startswith("src/"), f"{file}: only YAML files and modules under src/"
    module = importlib.import_module(file.removeprefix("src/").removesuffix(".py").replace("/", "."))
    value = getattr(module, key)
    return list(value) if isinstance(value, dict) else value


def matches(ours: str, value) -> bool:
    ours = ours.replace("`", "").strip()
    if isinstance(value, bool):
        return ours.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(ours.replace(",", "").replace("_", "")) == float(value)
        except ValueError:
            return False
    if isinstance(value, (list, tuple)):
        return [item.strip() for item in ours.split(",")] == [str(item) for item in value]
    return ours == str(value)


ROWS = [row for row in table_rows() if row["file: key"] not in ("", "—", "-")]


def test_the_table_names_values_to_check():
    assert len(ROWS) >= 30  # the 30 rows of Table 8 at least


@pytest.mark.parametrize("row", ROWS, ids=[f"line{row['line']}-{row['item']}" for row in ROWS])
def test_the_table_matches_the_repository(row):
    try:
        value = lookup(row["file: key"])
    except (KeyError, AttributeError) as error:
        pytest.fail(f"docs/paper-fidelity.md:{row['line']} ({row['item']}): {row['file: key']} not found: {error}")
    assert matches(row["ours"], value), (
        f"docs/paper-fidelity.md:{row['line']} ({row['item']}): the table says {row['ours']!r}, "
        f"{row['file: key']} holds {value!r}")


def test_a_drifted_value_is_caught(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  vision:\n    sources:\n      - {name: dvqa, samples: 199990}\n")
    value = lookup_yaml(recipe, "stages.vision.sources.dvqa.samples")
    assert not matches("199,995", value) and matches("199,990", value)
    assert matches("en, de", ("en", "de")) and not matches("de, en", ("en", "de"))
    assert matches("false", False) and not matches("0", False)
    with pytest.raises(KeyError):
        lookup_yaml(recipe, "stages.vision.sources.chartqa.samples")
