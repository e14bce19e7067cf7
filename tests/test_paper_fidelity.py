"""docs/paper-fidelity.md against the repository: every `file: key` of its tables must still hold the `ours` value."""

import importlib
import re
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
        f"{row['file: key']} holds {value!r}"
    )


def test_a_drifted_value_is_caught(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  vision:\n    sources:\n      - {name: dvqa, samples: 199990}\n")
    value = lookup_yaml(recipe, "stages.vision.sources.dvqa.samples")
    assert not matches("199,995", value) and matches("199,990", value)
    assert matches("en, de", ("en", "de")) and not matches("de, en", ("en", "de"))
    assert matches("false", False) and not matches("0", False)
    with pytest.raises(KeyError):
        lookup_yaml(recipe, "stages.vision.sources.chartqa.samples")


# The paper's own numbers (arXiv 2510.21849), as printed, with where they are printed. Table 8 lives in
# tests/test_data_visionblocks.py (TABLE_8), which checks the recipe against it.
SECTION_4 = {  # §4 "High-quality English captions are enough to ensure strong alignment"
    "English-only captions from PIXMO-CAP": 702_205,
    "translated subset from PIXMO-CAP": 367_779,
}
TABLE_1 = {  # TextVQA, OCR Bench, CC-OCR, ALM-Bench (en), ALM-Bench (multi)
    "Qwen2.5-VL-3B-Instruct": ("77.8", "78.7", "76.4", "81.0", "76.2"),
    "Qwen2.5-VL-7B-Instruct": ("82.5", "84.5", "78.6", "83.1", "83.6"),
    "Gemma3-4B-it": ("65.2", "74.2", "69.1", "79.7", "80.0"),
    "Gemma3-12B-it": ("73.2", "74.7", "73.8", "83.5", "84.5"),
    "CulturalPangea7B": ("69.8", "63.5", "51.7", "61.3", "65.2"),
    "Llama3-Llava-Next-8B": ("64.8", "54.4", "40.9", "76.5", "73.4"),
    "Aya-Vision-8B": ("66.9", "61.0", "46.3", "78.2", "77.3"),
    "TowerVision-2B": ("68.1", "58.6", "46.1", "77.1", "81.1"),
    "TowerVision-2B-OCR": ("69.1", "63.5", "55.5", "76.1", "77.1"),
    "TowerVision-9B": ("73.6", "69.7", "56.3", "83.6", "85.2"),
    "TowerVision-9B-OCR": ("76.2", "72.7", "65.1", "86.1", "84.8"),
}
TABLE_2 = {  # Multi30K en→cs, en→de, en→fr (xCOMET); CoMMuTE en→de, en→fr, en→ru, en→zh; no Gemma3-12B-it
    "Qwen2.5-VL-3B-Instruct": ("83.3", "96.7", "92.6", "71.6", "74.4", "77.5", "81.5"),
    "Qwen2.5-VL-7B-Instruct": ("83.9", "97.1", "93.2", "74.7", "76.9", "77.2", "82.4"),
    "Gemma3-4B-it": ("33.4", "44.0", "33.2", "76.7", "78.2", "79.0", "74.4"),
    "CulturalPangea7B": ("80.0", "95.8", "92.1", "68.3", "77.3", "75.3", "79.3"),
    "Llama3-Llava-Next-8B": ("79.1", "93.3", "88.1", "72.0", "74.4", "74.4", "73.5"),
    "Aya-Vision-8B": ("94.4", "97.9", "95.3", "69.3", "76.9", "74.4", "76.2"),
    "TowerVision-2B": ("90.3", "97.5", "94.7", "70.0", "74.3", "73.2", "76.6"),
    "TowerVision-2B-OCR": ("90.1", "97.5", "94.7", "70.0", "77.3", "74.2", "76.9"),
    "TowerVision-9B": ("95.1", "98.1", "95.6", "72.0", "78.8", "75.6", "77.4"),
    "TowerVision-9B-OCR": ("94.5", "98.1", "95.6", "72.2", "78.3", "75.6", "77.3"),
}
TABLE_3 = {  # ViMUL-Bench: ar, bn*, zh, en, fr, de, hi, ja, ru, si*, es, sv, ta*, ur*
    "ViMUL-7B": "41.5 35.4 37.0 48.6 48.3 43.9 39.2 37.8 45.7 21.2 44.3 41.4 23.3 36.8",
    "LLaVA-Video-7B": "38.8 30.4 43.2 53.3 49.2 45.4 34.2 33.4 38.2 18.1 45.7 39.8 21.9 33.8",
    "VideoLLaMA3-7B": "45.6 36.6 48.0 52.9 47.1 43.8 37.5 39.4 44.8 25.1 45.4 38.5 22.8 32.1",
    "TowerVision-2B": "18.9 19.5 21.7 34.2 28.9 28.3 25.1 22.2 24.8 16.3 30.4 27.1 16.1 19.9",
    "TowerVideo-2B": "23.0 18.9 35.9 45.2 39.6 39.7 37.2 34.1 38.0 17.1 37.4 38.0 17.7 18.7",
    "TowerVision-9B": "34.2 25.4 35.3 46.7 41.1 40.8 34.2 28.1 40.3 19.8 40.5 39.6 21.6 26.4",
    "TowerVideo-9B": "38.6 22.1 44.8 51.9 49.1 47.1 32.2 42.3 40.9 20.8 46.0 44.8 24.1 19.5",
}
TABLE_7 = {  # ViMUL-Bench, the same 14 languages; the multilingual row is Table 3's TowerVideo-2B
    "TowerVideo-2B (english only)": "25.7 17.8 26.7 45.5 42.3 34.8 27.8 27.7 34.4 17.9 37.8 34.0 18.3 19.7",
    "TowerVideo-2B (multilingual)": TABLE_3["TowerVideo-2B"],
}
VERDICTS = ("match", "paper-silent", "deviation")


@pytest.mark.parametrize("row", table_rows(), ids=lambda row: f"line{row['line']}-{row['item']}")
def test_every_verdict_is_match_paper_silent_or_deviation(row):
    assert row["verdict"].startswith(VERDICTS), f"docs/paper-fidelity.md:{row['line']}: {row['verdict'][:60]!r}"


def test_paper_cells_quote_table_8_and_section_4():
    from conftest import PRINTED_ENGLISH, TABLE_8

    printed = {name: (f"{samples:,}", percent) for name, samples, percent, _ in TABLE_8}
    printed["English / multilingual totals"] = (f"{PRINTED_ENGLISH:,}", "63.1")  # Table 8: "Total (English)"
    cited = 0
    for row in table_rows():
        match = re.match(r"Table 8: ([\d,]+) \(([\d.]+)%\)", row["paper (where)"])
        if match:
            assert printed[row["item"]] == match.groups(), f"docs/paper-fidelity.md:{row['line']}"
            cited += 1
    assert cited == len(printed)
    stage1 = {row["item"]: row for row in table_rows() if row["item"].startswith("Stage 1 ")}
    for quote, number in zip(SECTION_4, (stage1["Stage 1 size"], stage1["Stage 1 translated captions (ablation)"])):
        assert quote in number["paper (where)"] and f"{SECTION_4[quote]:,}" in number["paper (where)"]
        assert lookup(number["file: key"]) == SECTION_4[quote]  # the recipe builds the paper's stage-1 sizes


def evaluation_doc_rows() -> dict[str, list[list[str]]]:
    """docs/evaluation.md's `(paper)` table rows: model -> its rows' cells (one row per table)."""
    rows: dict[str, list[list[str]]] = {}
    for line in (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].endswith(" (paper)"):
            rows.setdefault(cells[0].removesuffix(" (paper)"), []).append(cells[1:])
    return rows


def test_published_scores_in_the_evaluation_doc_are_the_papers():
    """docs/evaluation.md's table template quotes Tables 1-3 and 7 exactly (an empty cell: the paper prints no
    number)."""
    rows = evaluation_doc_rows()
    image_models = set(TABLE_1) | set(TABLE_2)
    for model in image_models:
        (cells,) = [row for row in rows[model] if len(row) == 12]
        assert cells == [*TABLE_1[model], *TABLE_2.get(model, ("",) * 7)], model
    for model, scores in (TABLE_3 | TABLE_7).items():
        (cells,) = [row for row in rows[model] if len(row) == 14]
        assert cells == scores.split(), model
