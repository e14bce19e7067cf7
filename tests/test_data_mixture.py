"""Mixture recipes: weighted seeded interleaving, switches, language sets, the build and its counts report."""

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml
from datasets import IterableDataset, load_from_disk

from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import write_jsonl
from towervision_hf.data.mixture import build, load_mixture, load_recipe, mixture_samples
from towervision_hf.data.report import BuildReport
from towervision_hf.data.schema import make_sample, message, to_features, to_trl_example, validate_sample


RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "data"
README = RECIPES.parent / "README.md"


def text_rows(prefix, count, languages=("en",)):
    return [
        make_sample(
            f"{prefix}-{i}",
            prefix,
            languages[i % len(languages)],
            [message("user", f"question {i}"), message("assistant", f"answer {i}")],
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_jsonl(text_rows("a", 1200), root / "a")
    write_jsonl(text_rows("b", 1200, ("de", "nb")), root / "b")
    write_jsonl(text_rows("c", 1200, ("ko",)), root / "c")
    return root


def write_recipe(tmp_path, sources, **changes):
    recipe = {
        "name": "toy",
        "seed": 3,
        "languages": "all",
        "switches": {"extra": "off"},
        "media": {"fetch": False},
        "stages": {
            "main": {
                "sources": [
                    {"name": "a", "adapter": "local", "weight": 5, "params": {"path": str(sources / "a")}},
                    {"name": "b", "adapter": "local", "weight": 3, "params": {"path": str(sources / "b")}},
                    {"name": "c", "adapter": "local", "weight": 2, "params": {"path": str(sources / "c")}},
                    {
                        "name": "d",
                        "adapter": "local",
                        "samples": 10,
                        "when": {"extra": "on"},
                        "params": {"path": str(sources / "a")},
                    },
                ]
            }
        },
    }
    recipe.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def take(recipe, limit, stage="main"):
    report = BuildReport()
    rows = list(mixture_samples(recipe, stage, report, limit=limit))
    return rows, report


def test_interleaving_follows_the_weights_within_sampling_error(tmp_path, sources):
    recipe = load_recipe(write_recipe(tmp_path, sources))
    limit = 1000
    rows, report = take(recipe, limit)
    assert len(rows) == limit
    counts = {source: sum(row["source"] == source for row in rows) for source in "abc"}
    for source, share in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        sigma = math.sqrt(limit * share * (1 - share))
        assert abs(counts[source] - limit * share) < 4 * sigma, counts
    # every source keeps its own order, and the report counts exactly the rows taken
    assert [row["id"] for row in rows if row["source"] == "a"] == [f"a-{i}" for i in range(counts["a"])]
    assert {source: data["kept"] for source, data in report.to_dict()["sources"].items()} == counts


def test_interleaving_is_deterministic_per_seed(tmp_path, sources):
    first = [row["id"] for row in take(load_recipe(write_recipe(tmp_path, sources)), 200)[0]]
    again = [row["id"] for row in take(load_recipe(write_recipe(tmp_path, sources)), 200)[0]]
    other = [row["id"] for row in take(load_recipe(write_recipe(tmp_path, sources), ["seed=4"]), 200)[0]]
    assert first == again and first != other


def test_exhausted_sources_drop_out_and_a_full_build_uses_every_row(tmp_path, sources):
    recipe = load_recipe(write_recipe(tmp_path, sources), ["switches.extra=on"])
    rows, report = take(recipe, None)
    assert len(rows) == 3 * 1200 + 10
    assert sum(row["source"] == "d" for row in rows) == 10  # `samples` caps a source


def test_language_sets_and_switches(tmp_path, sources):
    recipe = load_recipe(write_recipe(tmp_path, sources), ["languages=core"])
    rows, report = take(recipe, None)
    assert {row["language"] for row in rows} == {"en", "de"}  # Korean is not a core language (Table 11)
    b, c = report.to_dict()["sources"]["b"], report.to_dict()["sources"]["c"]
    assert b["skipped"] == {"language_not_selected": 600} and b["kept"] == 600
    assert c["skipped"] == {"language_not_selected": 1200} and c["kept"] == 0
    assert "d" not in report.to_dict()["sources"]  # switched off

    recipe = load_recipe(write_recipe(tmp_path, sources), ["languages=[nb]"])
    assert {row["language"] for row in take(recipe, None)[0]} == {"nb"}


@pytest.mark.parametrize(
    "override, message",
    [("switches", "KEY=VALUE"), ("seed.x=1", "not a mapping"), ("languages=xx", "'xx'")],
)
def test_bad_overrides_are_explained(tmp_path, sources, override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(write_recipe(tmp_path, sources), [override])


def test_recipe_errors_name_the_source(tmp_path, sources):
    bad_when = {
        "stages": {
            "main": {
                "sources": [
                    {
                        "name": "a",
                        "adapter": "local",
                        "weight": 1,
                        "when": {"nope": 1},
                        "params": {"path": str(sources / "a")},
                    }
                ]
            }
        }
    }
    with pytest.raises(ValueError, match="source 'a': `when` names unknown switch 'nope'"):
        load_recipe(write_recipe(tmp_path, sources, **bad_when))
    no_weight = {"stages": {"main": {"sources": [{"name": "a", "adapter": "local", "params": {}}]}}}
    with pytest.raises(ValueError, match="give `samples`"):
        load_recipe(write_recipe(tmp_path, sources, **no_weight))
    with pytest.raises(ValueError, match="has no stage 'video'"):
        load_recipe(write_recipe(tmp_path, sources)).active_sources("video")


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"samples": -5}, r"source 'a': `samples` must be a positive integer \(rows taken\), got -5"),
        ({"samples": 2.5}, r"`samples` must be a positive integer \(rows taken\), got 2.5"),
        ({"samples": 10, "weight": 0}, "source 'a': `weight` must be a positive finite number, got 0"),
        ({"weight": "high"}, "source 'a': `weight` must be a positive finite number, got 'high'"),
        ({"weight": math.nan}, "source 'a': `weight` must be a positive finite number, got nan"),
        ({"weight": math.inf}, "source 'a': `weight` must be a positive finite number, got inf"),
        ({"samples": 10, "weight": -math.inf}, "source 'a': `weight` must be a positive finite number, got -inf"),
    ],
)
def test_bad_counts_and_weights_name_the_field(tmp_path, sources, setting, message):
    source = {"name": "a", "adapter": "local", "params": {"path": str(sources / "a")}, **setting}
    with pytest.raises(ValueError, match=message):
        load_recipe(write_recipe(tmp_path, sources, stages={"main": {"sources": [source]}}))


def test_nan_and_inf_weights_written_in_yaml_name_the_source(tmp_path, sources):
    recipe_path = write_recipe(tmp_path, sources)
    for spelling in (".nan", ".inf"):
        recipe_path.write_text(recipe_path.read_text().replace("weight: 3", f"weight: {spelling}"))
        with pytest.raises(ValueError, match="stage 'main', source 'b': `weight` must be a positive finite number"):
            load_recipe(recipe_path)
        recipe_path = write_recipe(tmp_path, sources)


def one_source(**changes):
    """A recipe change: stage `main` with source `a` (reading the `local` folder `path`) changed by `changes`."""
    return lambda sources: {
        "stages": {
            "main": {
                "sources": [
                    {"name": "a", "adapter": "local", "weight": 5, "params": {"path": str(sources / "a")}, **changes}
                ]
            }
        }
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"langauges": "core"}, r"recipe .*recipe.yaml: unknown key 'langauges'; did you mean 'languages'\?"),
        (
            {"media": {"fetch": False, "worker": 2}},
            r"recipe .*recipe.yaml, media: unknown key 'worker'; did you mean 'workers'\?",
        ),
        ({"paper": {"tabel": "Table 8"}}, r"recipe .*recipe.yaml, paper: unknown key 'tabel'; did you mean 'table'\?"),
        (
            {"stages": {"main": {"sources": [], "sorces": []}}},
            r"recipe .*recipe.yaml, stage 'main': unknown key 'sorces'; did you mean 'sources'\?",
        ),
        ({"stages": "main"}, r"recipe .*recipe.yaml, stages: expected a mapping, got 'main'"),
        ({"switches": ["video"]}, r"recipe .*recipe.yaml, switches: expected a mapping, got \['video'\]"),
        (
            one_source(wieght=2),
            r"recipe 'toy', stage 'main', source 'a': unknown key 'wieght'; did you mean 'weight'\?",
        ),
        (
            one_source(paper={"row": "VQAv2", "tags": "public"}),
            r"recipe 'toy', stage 'main', source 'a', paper: unknown key 'tags'; did you mean 'tag'\?",
        ),
        (
            one_source(params={"pth": "x"}),
            r"recipe 'toy', stage 'main', source 'a': adapter 'local' has no params \['pth'\]",
        ),
        (
            {"inputs": {"captions": {"adapter": "local", "param": {}}}},
            r"recipe .*recipe.yaml, input 'captions': unknown key 'param'; did you mean 'params'\?",
        ),
        (
            {"inputs": {"captions": {"adapter": "local", "params": {"pth": "x"}}}},
            r"recipe .*recipe.yaml, source 'captions': adapter 'local' has no params \['pth'\]",
        ),
    ],
)
def test_unknown_recipe_keys_at_every_level_are_errors_naming_the_nearest_key(tmp_path, sources, changes, message):
    changes = changes(sources) if callable(changes) else changes
    with pytest.raises(ValueError, match=message):
        load_recipe(write_recipe(tmp_path, sources, **changes))


def test_a_misspelt_top_level_key_fails_the_build_instead_of_building_every_language(tmp_path, sources, capsys):
    recipe_path = write_recipe(tmp_path, sources, langauges="core")
    assert main(["build", str(recipe_path), "--out", str(tmp_path / "built")]) == 2
    assert "unknown key 'langauges'; did you mean 'languages'?" in capsys.readouterr().err
    assert not (tmp_path / "built").exists()


def test_build_writes_a_dataset_and_the_counts_report(tmp_path, sources, capsys):
    recipe_path = write_recipe(tmp_path, sources)
    out = tmp_path / "built"
    assert main(["build", str(recipe_path), "--out", str(out), "--limit", "300", "--set", "languages=core"]) == 0
    dataset = load_from_disk(str(out))
    assert len(dataset) == 300 and dataset.features == to_features()
    counts = json.loads((out / "counts.json").read_text())
    assert counts["total"] == 300 and counts["limit"] == 300 and counts["seed"] == 3
    assert sum(source["kept"] for source in counts["sources"].values()) == 300
    assert sum(language["rows"] for language in counts["languages"].values()) == 300
    for source in counts["sources"].values():
        assert source["read"] == source["kept"] + sum(source["skipped"].values())
    printed = capsys.readouterr().out
    assert "toy/main: 300 rows" in printed and "language_not_selected=" in printed


def test_sample_recipe_builds_every_stage_in_the_training_schema(tmp_path):
    out = tmp_path / "sample"
    reports = build(load_recipe(RECIPES / "sample.yaml"), out, echo=lambda text: None)
    assert set(reports) == {"alignment", "vision", "video"}
    for stage, expected in {"alignment": 12, "vision": 32, "video": 16}.items():
        dataset = load_from_disk(str(out / stage))
        assert len(dataset) == expected
        assert all(validate_sample(row) == [] for row in dataset)
    vision = load_from_disk(str(out / "vision"))
    multi_image = next(row for row in vision if len(row["images"]) == 2)
    assert [image.size for image in to_trl_example(multi_image)["images"]][0] == (64, 64)
    assert all(row["images"][0]["bytes"] for row in vision if row["images"])  # embedded: the folder is portable


def test_load_mixture_streams_the_recipe(tmp_path, sources):
    dataset = load_mixture(write_recipe(tmp_path, sources), limit=7)
    assert isinstance(dataset, IterableDataset)
    first, second = list(dataset), list(dataset)
    assert len(first) == 7 and first == second  # every epoch replays the same mixture
    with pytest.raises(ValueError, match="pass stage="):
        load_mixture(RECIPES / "sample.yaml")


def test_visionblocks_recipe_sources_and_ablation_switches():
    recipe = load_recipe(RECIPES / "visionblocks.yaml")
    assert len(recipe.languages) == 20 and [s.name for s in recipe.active_sources("alignment")] == ["pixmo_cap"]
    assert [s.name for s in recipe.active_sources("video")] == ["llava_video_en", "llava_video_translated"]
    ablation = load_recipe(
        RECIPES / "visionblocks.yaml",
        ["languages=core", "switches.video_qe_filter=true", "switches.alignment_captions=translated"],
    )
    assert len(ablation.languages) == 10
    assert [s.name for s in ablation.active_sources("alignment")] == ["pixmo_cap", "pixmo_cap_translated"]
    assert [s.name for s in ablation.active_sources("video")] == ["llava_video_en", "llava_video_translated_filtered"]
    # generated folders follow the language set, so the core ablation reads data translated into the core set
    assert ablation.active_sources("video")[1].params["path"] == "data/visionblocks/llava_video_178k-core-filtered"


def test_a_build_where_every_row_is_filtered_is_empty_and_explained(tmp_path, sources):
    out = tmp_path / "empty"
    messages = []
    recipe = load_recipe(write_recipe(tmp_path, sources), ["languages=[hi]"])
    reports = build(recipe, out, limit=50, echo=messages.append)
    assert len(load_from_disk(str(out))) == 0
    counts = json.loads((out / "counts.json").read_text())
    assert counts["total"] == 0 and counts["language_set"] == ["hi"]
    assert counts["sources"]["a"]["skipped"] == {"language_not_selected": 1200}
    assert reports["main"].total == 0 and "produced no rows" in messages[-1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("languagez=core", "unknown key 'languagez'; did you mean 'languages'?"),
        ("media.workerz=2", "unknown key 'media.workerz'; did you mean 'media.workers'?"),
        ("stages.mian.sources=[]", "unknown key 'stages.mian'; did you mean 'stages.main'?"),
    ],
)
def test_unknown_override_keys_are_errors_naming_the_nearest_key(tmp_path, sources, capsys, override, message):
    recipe_path = write_recipe(tmp_path, sources)
    assert main(["build", str(recipe_path), "--out", str(tmp_path / "built"), "--set", override]) == 2
    assert f"towervision data build: error: --set {override!r}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "built").exists()


def test_english_only_keeps_the_english_rows_of_each_share_without_refill(tmp_path, sources):
    """Table 5's English-only data: the rows the full mixture takes from each source, minus the non-English ones."""
    capped = {
        "stages": {
            "main": {
                "sources": [
                    {"name": "a", "adapter": "local", "samples": 30, "params": {"path": str(sources / "a")}},
                    {"name": "b", "adapter": "local", "samples": 30, "params": {"path": str(sources / "b")}},
                    {"name": "mixed", "adapter": "local", "samples": 40, "params": {"path": str(tmp_path / "mixed")}},
                ]
            }
        }
    }
    write_jsonl(text_rows("mixed", 100, ("en", "de", "ko", "en")), tmp_path / "mixed")
    full, _ = take(load_recipe(write_recipe(tmp_path, sources, **capped)), None)
    recipe = load_recipe(write_recipe(tmp_path, sources, **capped), ["switches.english_only=true"])
    english, report = take(recipe, None)
    assert sorted(row["id"] for row in english) == sorted(row["id"] for row in full if row["language"] == "en")
    assert {row["source"] for row in english} == {"a", "mixed"} and len(english) == 30 + 20
    counts = report.to_dict()["sources"]
    assert counts["b"]["kept"] == 0 and counts["b"]["skipped"] == {"not_english": 30}  # German and Bokmål: no refill
    assert counts["mixed"]["kept"] == 20 and counts["mixed"]["skipped"] == {"not_english": 20}
    with pytest.raises(ValueError, match=r"switches.english_only must be one of \[False, True\], got 'yes'"):
        load_recipe(write_recipe(tmp_path, sources, **capped), ["switches.english_only=yes"])


def test_visionblocks_paper_ablations_select_the_papers_data():
    recipe = load_recipe(RECIPES / "visionblocks.yaml")
    assert [(s.name, s.samples) for s in recipe.active_sources("alignment")] == [("pixmo_cap", 702205)]  # §4
    video = load_recipe(RECIPES / "visionblocks.yaml", ["switches.video=english"]).active_sources("video")
    assert [(s.name, s.adapter, s.samples) for s in video] == [("llava_video_english", "llava_video", 1395235)]
    inputs = recipe.inputs["llava_video_178k"]  # Table 7's English run reads the untranslated originals
    assert (video[0].params, video[0].samples) == (inputs.params, inputs.samples)
    english = load_recipe(RECIPES / "visionblocks.yaml", ["switches.english_only=true"])
    assert "pixmo_cap_translated" not in [s.name for s in english.active_sources("vision")]
    with pytest.raises(ValueError, match="no source of stage 'video' is active.*video=english, video=multilingual"):
        load_recipe(RECIPES / "visionblocks.yaml", ["switches.video=englsh"])


def data_ablation_commands() -> list[list[str]]:
    """The `# data ablations` block of recipes/README.md, one `towervision data ...` argument list per line."""
    block = re.search(r"```bash\n# data ablations\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    return [shlex.split(line) for line in block.strip().splitlines()]


# rows each README data ablation builds, as its table says (paper: §4, Tables 5, 6, 7, 11)
DATA_ABLATION_ROWS = {
    "alignment": "visionblocks/alignment: 1 sources, 702,205 rows",
    "switches.alignment_captions=translated": "visionblocks/alignment: 2 sources, 1,069,984 rows",
    "switches.english_only=true": "visionblocks/vision: 27 sources, 4,588,501 rows",
    "languages=core": "visionblocks/vision: 28 sources, 4,956,280 rows",
    "switches.video=english": "visionblocks/video: 1 sources, 1,395,235 rows",
}


def test_readme_data_ablations_are_one_line_dry_runs_with_their_counts(capsys, monkeypatch):
    monkeypatch.chdir(RECIPES.parents[1])
    commands = data_ablation_commands()
    assert len(commands) == len(DATA_ABLATION_ROWS)
    for argv in commands:
        assert argv[:3] == ["towervision", "data", "build"] and "--dry-run" in argv
        key = argv[argv.index("--set") + 1] if "--set" in argv else argv[argv.index("--stage") + 1]
        assert main(argv[2:]) == 0
        printed = capsys.readouterr().out
        assert DATA_ABLATION_ROWS[key] in printed, (key, printed[:500])
        assert DATA_ABLATION_ROWS[key].split(": ")[1].split(" sources")[0] in README.read_text()
