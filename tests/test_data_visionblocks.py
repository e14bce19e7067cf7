"""VisionBlocks as the paper builds it: Table 8 row by row, the 10-vs-20 switch at fixed size, the video halves and
the adapters of the Table 8 sources."""

from pathlib import Path

import pytest
import yaml
from conftest import PRINTED_ENGLISH, PRINTED_MULTILINGUAL, PRINTED_TOTAL, TABLE_8
from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature

from towervision_hf.data.cli import _read_rows, main
from towervision_hf.data.jsonl import write_jsonl
from towervision_hf.data.languages import CORE_LANGUAGES, LANGUAGE_CODES
from towervision_hf.data.mixture import (
    PAPER_TAGS,
    build,
    is_multilingual,
    load_recipe,
    paper_percent,
    plan,
)
from towervision_hf.data.report import BuildReport
from towervision_hf.data.schema import make_sample, message, validate_sample
from towervision_hf.data.sources import iter_samples, make_adapter
from towervision_hf.data.translate import translate_rows


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "data" / "visionblocks.yaml"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(RECIPE)


def test_the_recipe_is_table_8_row_by_row(recipe):
    rows = [entry for entry in plan(recipe) if entry["row"]]
    assert [(entry["row"], entry["samples"], entry["tag"]) for entry in rows] == [
        (row, samples, tag) for row, samples, _, tag in TABLE_8
    ]
    assert [entry["stage"] for entry in rows] == ["vision"] * 28 + ["video"] * 2
    # the rows' sum differs from the total the paper prints; the recipe keeps both
    total = sum(entry["samples"] for entry in rows)
    multilingual = sum(entry["samples"] for entry in rows if is_multilingual(entry))
    assert total == 6_351_515 and total - PRINTED_TOTAL == 38_229
    assert (multilingual, total - multilingual) == (PRINTED_MULTILINGUAL - 1, PRINTED_ENGLISH + 38_230)
    assert recipe.paper == {
        "table": "Table 8",
        "total": PRINTED_TOTAL,
        "english": PRINTED_ENGLISH,
        "multilingual": PRINTED_MULTILINGUAL,
    }
    # the paper's percentages are the rows over its printed total, to its printed precision; one is off by 0.01
    shares = {entry["row"]: paper_percent(entry["samples"], PRINTED_TOTAL) for entry in rows}
    assert {row for row, _, percent, _ in TABLE_8 if shares[row] != percent} == {"EuroBlocks-SFT"}
    assert shares["EuroBlocks-SFT"] == "17.33"


def test_every_source_and_input_has_an_adapter_in_the_schema(recipe):
    for stage in recipe.stages:
        for spec in recipe.stages[stage]:
            assert spec.paper.get("tag") in (None, *PAPER_TAGS), spec.name
            make_adapter(spec.adapter, spec.name, **spec.params)  # known adapter, accepted params
    for spec in recipe.inputs.values():
        make_adapter(spec.adapter, spec.name, **spec.params)
    synthetic = [spec for spec in recipe.stages["vision"] if spec.paper["tag"] == "synthetic"]
    assert len(synthetic) == 7 and all(f"{spec.name}_questions" in recipe.inputs for spec in synthetic)
    assert recipe.inputs["llava_video_178k"].samples == 697_618 + 697_617


def test_dry_run_prints_every_row_with_its_count_and_share(capsys):
    assert main(["build", str(RECIPE), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    assert lines["dvqa"][1:] == ["DVQA", "public", "199,995", "4.04%", "3.17"]
    assert lines["scienceqa"][-1] == "0.012" and lines["llava_video_translated"][-2:] == ["50.00%", "11.05"]
    assert "Table 8 rows: 30, 6,351,515 samples (English 4,020,860, multilingual 2,330,655)" in printed
    assert "rows minus printed total: +38,229" in printed


def rows_in(languages, count, prefix):
    return [
        make_sample(
            f"{prefix}-{i}",
            prefix,
            languages[i % len(languages)],
            [message("user", f"q{i}"), message("assistant", f"a{i}")],
        )
        for i in range(count)
    ]


def test_the_10_vs_20_switch_keeps_the_dataset_size(tmp_path):
    # a multilingual source with rows in all 20 languages, and generated data per language set ("{languages}")
    write_jsonl(rows_in(LANGUAGE_CODES, 400, "cultural"), tmp_path / "cultural")
    for name, codes in (("all", LANGUAGE_CODES), ("core", CORE_LANGUAGES), ("custom", ["hi"])):
        write_jsonl(rows_in([code for code in codes if code != "en"], 90, "translated"), tmp_path / f"tr-{name}")
    recipe = {
        "name": "toy",
        "media": {"fetch": False},
        "stages": {
            "vision": {
                "sources": [
                    {
                        "name": "cultural",
                        "adapter": "local",
                        "samples": 150,
                        "params": {"path": str(tmp_path / "cultural")},
                    },
                    {
                        "name": "translated",
                        "adapter": "local",
                        "samples": 90,
                        "params": {"path": str(tmp_path / "tr-{languages}")},
                    },
                ]
            }
        },
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    counts = {}
    for languages in ("all", "core"):
        messages = []
        report = build(load_recipe(path, [f"languages={languages}"]), tmp_path / languages, echo=messages.append)
        counts[languages] = report["vision"].to_dict()
        assert not [line for line in messages if line.startswith("warning")]
    assert counts["all"]["total"] == counts["core"]["total"] == 240
    assert set(counts["core"]["languages"]) == set(CORE_LANGUAGES)
    assert len(counts["all"]["languages"]) == 20
    # a source without enough rows in the selected languages is reported, never silently smaller
    messages = []
    build(load_recipe(path, ["languages=[hi]"]), tmp_path / "hi", echo=messages.append)
    assert "warning: source 'cultural' gave 20 of its 150 samples in languages hi" in messages


def test_the_video_halves_come_from_one_translate_output(tmp_path):
    video_rows = rows_in(["en"], 11, "video")
    translated = list(
        translate_rows(
            video_rows,
            [c for c in LANGUAGE_CODES if c != "en"],
            lambda prompts: [f"mt:{prompt[-8:]}" for prompt in prompts],
            assign="uniform",
            keep_english=0.5,
            seed=0,
        )
    )
    write_jsonl(translated, tmp_path / "llava_video_178k-all")
    spec = load_recipe(RECIPE).stages["video"]
    halves = {}
    for source in spec[:2]:
        params = {**source.params, "path": source.params["path"].replace("data/visionblocks", str(tmp_path))}
        report = BuildReport()
        halves[source.name] = list(iter_samples(make_adapter(source.adapter, source.name, **params), report))
    english, other = halves["llava_video_en"], halves["llava_video_translated"]
    assert len(english) == 6 and len(other) == 5  # round(11 / 2) stays English, as 697,618 / 697,617
    assert {row["language"] for row in english} == {"en"} and "en" not in {row["language"] for row in other}
    kept_ids = {row["id"] for row in english}
    assert not kept_ids & {row["id"].split(":")[0] for row in other}  # disjoint halves


def test_recipe_inputs_feed_translate_and_synth(tmp_path):
    write_jsonl(rows_in(["en"], 5, "cap"), tmp_path / "captions")
    recipe = {
        "name": "toy",
        "languages": "core",
        "media": {"fetch": False},
        "stages": {
            "s": {
                "sources": [
                    {"name": "x", "adapter": "local", "weight": 1, "params": {"path": str(tmp_path / "captions")}}
                ]
            }
        },
        "inputs": {"captions": {"adapter": "local", "samples": 3, "params": {"path": str(tmp_path / "captions")}}},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(recipe))
    rows = _read_rows(f"{path}#captions")
    assert [row["id"] for row in rows] == ["cap-0", "cap-1", "cap-2"] and all(validate_sample(r) == [] for r in rows)
    with pytest.raises(ValueError, match="no input 'nope'"):
        _read_rows(f"{path}#nope")


def image_bytes(colour):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cauldron_subset_rows_become_multi_turn_conversations(tmp_path):
    text = {"user": Value("string"), "assistant": Value("string"), "source": Value("string")}
    features = Features({"images": List(ImageFeature()), "texts": List(text)})
    path = tmp_path / "plotqa.parquet"
    Dataset.from_list(
        [
            {
                "images": [{"bytes": image_bytes("red"), "path": None}],
                "texts": [
                    {"user": "Max?", "assistant": "7", "source": "plotqa"},
                    {"user": "Min?", "assistant": "2", "source": "plotqa"},
                ],
            },
            {
                "images": [{"bytes": image_bytes("blue"), "path": None}],
                "texts": [{"user": " ", "assistant": "x", "source": "plotqa"}],
            },
        ],
        features=features,
    ).to_parquet(str(path))
    report = BuildReport()
    rows = list(iter_samples(make_adapter("cauldron", "plotqa", subset="plotqa", path=str(path)), report))
    assert len(rows) == 1 and validate_sample(rows[0]) == []
    assert [turn["role"] for turn in rows[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert rows[0]["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert report.to_dict()["sources"]["plotqa"]["skipped"] == {"empty_conversation": 1}


def test_pixmo_count_asks_how_many(tmp_path):
    path = tmp_path / "count.parquet"
    Dataset.from_list(
        [
            {"image_url": "https://x/1.png", "image_sha256": "", "label": "birds", "count": 3},
            {"image_url": "https://x/2.png", "image_sha256": "", "label": "", "count": 1},
        ]
    ).to_parquet(str(path))
    report = BuildReport()
    rows = list(iter_samples(make_adapter("pixmo_count", "count", path=str(path)), report))
    assert [block["text"] for turn in rows[0]["messages"] for block in turn["content"] if block["text"]] == [
        "How many birds are there?",
        "3",
    ]
    assert rows[0]["images"][0]["url"] == "https://x/1.png"
    assert report.to_dict()["sources"]["count"]["skipped"] == {"malformed": 1}
