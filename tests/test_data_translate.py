"""Tower+ translation (prompt, batching, language assignment, bookkeeping) and COMETKiwi filtering."""

import json
from collections import Counter

import pytest

from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import read_jsonl, write_jsonl
from towervision_hf.data.prompts import CAPTION_PROMPTS
from towervision_hf.data.quality import CometKiwiScorer, score_rows, split_by_threshold
from towervision_hf.data.report import BuildReport
from towervision_hf.data.sample import load_sample
from towervision_hf.data.schema import validate_sample
from towervision_hf.data.translate import TransformersBackend, assign_languages, tower_prompt, translate_rows


class SpyBackend:
    """Records the prompts and answers `<target>|<source text>`."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        outputs = []
        for prompt in prompts:
            _, source_line, target_line = prompt.split("\n")
            outputs.append(f"{target_line.split(':')[0]}|{source_line.split(': ', 1)[1]}")
        return outputs


def test_tower_prompt_format():
    assert tower_prompt("A red circle.", "pt-BR") == (
        "Translate the following English source text to Portuguese (Brazil):\n"
        "English: A red circle.\nPortuguese (Brazil): "
    )
    assert tower_prompt("Ein Kreis.", "zh_TW", source="de").startswith("Translate the following German source text")


def test_assign_languages_keeps_half_in_english_and_spreads_the_rest_uniformly():
    targets = assign_languages(101, ["de", "ko", "pt-BR"], seed=1, keep_english=0.5)
    counts = Counter(targets)
    assert counts["en"] == 50 and sorted(counts[code] for code in ("de", "ko", "pt-BR")) == [17, 17, 17]
    assert targets == assign_languages(101, ["de", "ko", "pt-BR"], seed=1, keep_english=0.5)
    assert targets != assign_languages(101, ["de", "ko", "pt-BR"], seed=2, keep_english=0.5)
    with pytest.raises(ValueError, match="'xx'"):
        assign_languages(3, ["xx"])


def test_conversation_mode_translates_text_blocks_only():
    rows = list(load_sample(3))[:4]
    spy = SpyBackend()
    report = BuildReport()
    out = list(translate_rows(rows, ["de", "ja"], spy, model_name="tower", report=report, chunk_size=3))
    assert len(out) == 2 * 4 and len(spy.calls) == 3  # chunks of 3 (row, language) jobs, one backend call each
    translated = [row for row in out if "translation" in row]
    assert len(translated) == 7  # the German source row is kept as it is for "de", not translated again
    for row in translated:
        assert validate_sample({k: v for k, v in row.items() if k != "translation"}) == []
        source = next(r for r in rows if r["id"] == row["translation"]["source_id"])
        assert row["videos"] == source["videos"] and row["id"] == f"{source['id']}:{row['language']}"
        assert [[b["type"] for b in t["content"]] for t in row["messages"]] == [
            [b["type"] for b in t["content"]] for t in source["messages"]
        ]
        for segment in row["translation"]["segments"]:
            target_name = {"de": "German", "ja": "Japanese"}[row["language"]]
            assert (
                row["messages"][segment["turn"]]["content"][segment["block"]]["text"]
                == f"{target_name}|{segment['src']}"
                == segment["mt"]
            )
    assert sum(Counter(r["language"] for r in out).values()) == report.total == 8


def test_caption_mode_pairs_translated_captions_with_target_language_prompts():
    rows = list(load_sample(1))[:3]
    out = list(translate_rows(rows, ["ko", "pt-PT"], SpyBackend(), mode="caption"))
    assert len(out) == 6
    for row in out:
        user_text = row["messages"][0]["content"][-1]["text"]
        assert user_text in CAPTION_PROMPTS[row["language"]]
        assert row["messages"][0]["content"][0]["type"] == "image"
        assert len(row["translation"]["segments"]) == 1 and row["translation"]["segments"][0]["turn"] == 1
    two_turn = list(load_sample(2))
    report = BuildReport()
    assert len(list(translate_rows(two_turn, ["ko"], SpyBackend(), mode="caption", report=report))) < len(two_turn)
    assert report.to_dict()["sources"]["sample_stage2"]["skipped"]["invalid_sample"] > 0


def test_transformers_backend_batches_like_single_prompts(tiny_tower):
    prompts = [tower_prompt(text, "de") for text in ("A red circle.", "Hi", "A much longer sentence about squares.")]
    backend = TransformersBackend(tiny_tower, batch_size=3, max_new_tokens=5, dtype="float32")
    batched = backend(prompts)
    backend.batch_size = 1
    assert batched == backend(prompts)
    assert backend.eos_token_ids == [1, 6]  # <eos> and <end_of_turn>


def test_translate_command_on_a_tiny_model(tmp_path, tiny_tower):
    english_videos = [row for row in load_sample(3) if row["language"] == "en"]
    write_jsonl(english_videos, tmp_path / "videos")
    out = tmp_path / "translated"
    code = main(
        [
            "translate",
            "--source",
            str(tmp_path / "videos"),
            "--langs",
            "de,ko,pt-BR",
            "--model",
            tiny_tower,
            "--backend",
            "transformers",
            "--assign",
            "uniform",
            "--keep-english",
            "0.5",
            "--max-new-tokens",
            "4",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = list(read_jsonl(out))
    report = json.loads((out / "report.json").read_text())
    source = report["sources"]["sample_stage3"]
    assert source["read"] == 8 and source["kept"] == len(rows)
    assert source["kept"] + source["skipped"].get("empty_translation", 0) == 8
    assert sum(row["language"] == "en" and "translation" not in row for row in rows) == 4  # half kept in English
    translated = [row for row in rows if "translation" in row]
    assert {row["translation"]["target_language"] for row in translated} <= {"de", "ko", "pt-BR"}
    assert all(row["translation"]["model"] == tiny_tower for row in translated)
    assert all(row["videos"][0]["path"].endswith(".mp4") for row in rows)  # media are referenced, never translated
    # the output is self-contained: its media sit next to the JSONL, referenced by relative paths
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert all(row["videos"][0]["path"].startswith("media/") for row in written)
    assert all((out / row["videos"][0]["path"]).is_file() for row in written)


def scored_rows():
    captions = [{**row, "source": "captions"} for row in load_sample(1)]
    # 8 translated captions (one segment each) and one English row, which passes unscored
    return list(translate_rows(captions[:4], ["de", "fr"], SpyBackend(), mode="caption")) + [captions[5]]


def test_filter_keeps_scores_and_applies_the_threshold():
    calls = []

    def scorer(sources, translations):
        calls.append(len(sources))
        return [0.9 if "German" in translation else 0.5 for translation in translations]

    rows = score_rows(scored_rows(), scorer, "kiwi")
    assert calls == [8]
    report = BuildReport("filter")
    kept, rejected = split_by_threshold(rows, 0.85, report)
    assert len(kept) == 5 and len(rejected) == 4
    assert all(row["translation"]["qe"]["score"] == 0.9 for row in kept if "translation" in row)
    assert report.to_dict()["sources"]["captions"]["skipped"] == {"below_threshold": 4}

    def refuse(sources, translations):
        raise AssertionError("scores are stored: no rescoring")

    assert len(split_by_threshold(score_rows(kept + rejected, refuse, "kiwi"), 0.4)[0]) == 9
    rescored = score_rows(rows, scorer, "kiwi", rescore=True)
    assert calls == [8, 8] and rescored[0]["translation"]["qe"]["model"] == "kiwi"
    score_rows(rows, scorer, "another-qe-model")
    assert calls == [8, 8, 8]


def test_filter_command_rethresholds_without_rescoring(tmp_path, monkeypatch):
    from towervision_hf.data import quality

    scored = []

    class FakeKiwi:
        def __init__(self, model, batch_size, gpus):
            assert model == "Unbabel/wmt22-cometkiwi-da"

        def __call__(self, sources, translations):
            scored.append(len(sources))
            return [0.9 if "German" in translation else 0.8 for translation in translations]

    monkeypatch.setattr(quality, "CometKiwiScorer", FakeKiwi)
    write_jsonl(scored_rows(), tmp_path / "translated")
    assert main(["filter", str(tmp_path / "translated"), "--out", str(tmp_path / "strict")]) == 0
    assert len(list(read_jsonl(tmp_path / "strict"))) == 5
    assert len(list(read_jsonl(tmp_path / "strict" / "rejected.jsonl"))) == 4
    assert main(["filter", str(tmp_path / "strict"), "--threshold", "0.8", "--out", str(tmp_path / "loose")]) == 0
    assert len(list(read_jsonl(tmp_path / "loose"))) == 9
    assert scored == [8]  # the second pass reused the stored scores
    report = json.loads((tmp_path / "loose" / "report.json").read_text())
    assert report["threshold"] == 0.8 and report["total"] == 9


def test_cometkiwi_needs_unbabel_comet():
    pytest.importorskip("torch")
    try:
        import comet  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="unbabel-comet"):
            CometKiwiScorer()
    else:
        pytest.skip("unbabel-comet is installed")
