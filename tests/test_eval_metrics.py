"""Metric code on hand-computed cases: contrastive accuracy, chrF/BLEU, answer matching, parsing, judge, results."""

import json
import urllib.error

import pytest

from towervision_hf.evaluation.alm_bench import parse_multiple_choice, question_kind
from towervision_hf.evaluation.judge import OpenAICompatibleJudge, parse_score
from towervision_hf.evaluation.languages import language_code, language_name, parse_language_list
from towervision_hf.evaluation.metrics import contrastive_accuracy, match_option, normalize_answer, translation_metrics
from towervision_hf.evaluation.multi30k import parse_pairs
from towervision_hf.evaluation.prompts import translation_prompt
from towervision_hf.evaluation.results import RunResult
from towervision_hf.evaluation.vimul import resolve_columns


def test_contrastive_accuracy_counts_strict_wins_and_ties_as_errors():
    result = contrastive_accuracy([-1.0, -2.0, -3.0, -4.0], [-2.0, -1.0, -3.0, -5.0])
    assert result == {"accuracy": 0.5, "ties": 1, "n": 4}
    assert contrastive_accuracy([], [])["accuracy"] is None


def test_mean_and_sum_conventions_can_disagree():
    # correct: 10 tokens at -1 each; incorrect: 2 tokens at -2 each
    assert contrastive_accuracy([-1.0], [-2.0])["accuracy"] == 1.0  # mean log-prob (= perplexity convention)
    assert contrastive_accuracy([-10.0], [-4.0])["accuracy"] == 0.0  # summed log-prob


def test_chrf_matches_a_hand_computation():
    # sacrebleu chrF: character n-grams (n = 1..6, whitespace removed), precision and recall averaged over n, then
    # F-beta with beta = 2. "thecatsat" is a prefix of "thecatsaton": every hypothesis n-gram matches (precision 1),
    # recall_n = (10 - n) / (12 - n).
    recall = sum((10 - n) / (12 - n) for n in range(1, 7)) / 6
    expected = 100 * (1 + 4) * recall / (4 * 1.0 + recall)
    scores = translation_metrics(["the cat sat"], ["the cat sat on"], "en")
    assert scores["chrf"] == pytest.approx(expected, abs=1e-6)
    assert translation_metrics(["a dog runs on the beach"], ["a dog runs on the beach"], "de")[
        "bleu"
    ] == pytest.approx(100)


def test_answer_normalization_and_option_matching():
    assert normalize_answer("  Paëlla! ") == "paëlla"
    assert normalize_answer("ＡＢＣ, def") == "abc def"
    options = ["Paella", "Sushi", "Tacos"]
    assert match_option("paella.", options) == 0
    assert match_option("I think it is Sushi", options) == 1
    assert match_option("Sushi or Tacos", options) is None  # two options named: no answer
    assert match_option("", options) is None
    assert match_option("(C) Tacos", options, letters=True) == 2
    assert match_option("b", options, letters=True) == 1
    assert match_option("Because it is", options, letters=True) is None


def test_alm_bench_answer_parsing():
    assert parse_multiple_choice("Paris (Options: Paris, Rome, Oslo)") == ("Paris", ["Paris", "Rome", "Oslo"])
    assert parse_multiple_choice("Brezel（Optionen: Brezel、Knödel、Strudel）") == (
        "Brezel",
        ["Brezel", "Knödel", "Strudel"],
    )
    assert parse_multiple_choice("Paris") is None
    assert parse_multiple_choice("Paris (Options: Paris)") is None
    kinds = ["Multiple Choice Questions", "True False Question", "Long Question", "Short Question", "Riddle", None]
    assert [question_kind(kind) for kind in kinds] == ["mcq", "tf", "long", "short", None, None]


def test_language_codes_and_names():
    assert language_code("de") == "de" and language_code("German") == "de" and language_code("zh-Hans") == "zh"
    assert language_code("Chinese (Simplified)") == "zh" and language_code("pt_BR") == "pt"
    assert language_code("Klingon") is None and language_code("") is None and language_code(None) is None
    assert language_name("fr") == "French"
    assert parse_language_list("all") == (None, [])
    assert parse_language_list("de, French,xx,de") == (["de", "fr"], ["xx"])
    towervision, unknown = parse_language_list("towervision")
    assert unknown == [] and len(towervision) == 18 and {"pt", "zh", "nb", "nn", "hi"} <= set(towervision)
    assert all(language_name(code) for code in towervision)
    assert parse_language_list("core")[0] == ["en", "de", "nl", "pt", "ru", "zh", "es", "fr", "it"]
    assert parse_pairs("en-de, en-fr") == [("en", "de"), ("en", "fr")]
    with pytest.raises(ValueError, match="'ende'"):
        parse_pairs("ende")


def test_tower_translation_prompt():
    expected = "Translate the following English source text to German:\nEnglish: The bank.\nGerman: "
    assert translation_prompt("The bank.", "German") == expected


def test_vimul_columns_resolve_from_candidates_and_overrides():
    columns = resolve_columns(["video_path", "question", "answer", "options", "Language"])
    assert columns["video"] == "video_path" and columns["language"] == "Language" and columns["category"] is None
    assert resolve_columns(["clip", "question", "gt"], {"video": "clip", "answer": "gt"})["answer"] == "gt"
    with pytest.raises(ValueError, match=r"\['video'\]"):
        resolve_columns(["question", "answer"])
    with pytest.raises(ValueError, match="no such column"):
        resolve_columns(["question", "answer"], {"video": "clip"})


class FakeTransport:
    def __init__(self, reply=None, error=None):
        self.reply, self.error, self.calls = reply, error, []

    def __call__(self, url, payload, headers, timeout):
        self.calls.append((url, payload, headers))
        if self.error:
            raise self.error
        return {"choices": [{"message": {"role": "assistant", "content": self.reply}}]}


def test_judge_request_and_parsing_at_the_transport_seam():
    transport = FakeTransport(reply="Score: 7/10")
    judge = OpenAICompatibleJudge("http://judge.local/v1/", "judge-model", api_key="secret", transport=transport)
    assert judge.score("What is shown?", "A cathedral", "A church") == pytest.approx(0.7)
    url, payload, headers = transport.calls[0]
    assert url == "http://judge.local/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret"
    assert payload["model"] == "judge-model" and payload["temperature"] == 0
    content = payload["messages"][0]["content"]
    assert "What is shown?" in content and "A cathedral" in content and "A church" in content
    json.dumps(payload)  # what goes on the wire is plain JSON


def test_judge_failures_are_none_not_crashes():
    failing = OpenAICompatibleJudge(
        "http://x/v1", "m", api_key="", transport=FakeTransport(error=urllib.error.URLError("down"))
    )
    assert failing.score("q", "r", "p") is None and "URLError" in failing.errors[0]
    assert (
        OpenAICompatibleJudge("http://x/v1", "m", api_key="", transport=FakeTransport(reply="great")).score(
            "q", "r", "p"
        )
        is None
    )
    assert parse_score("12") == 1.0 and parse_score("-3") == 0.0 and parse_score("8,5") == pytest.approx(0.85)


def test_results_are_written_as_json_markdown_and_predictions(tmp_path):
    result = RunResult(
        "commute", "out/stage2", {"source": "Unbabel/commute_multimodal_mt", "revision": "main"}, {"batch_size": 8}
    )
    result.tables["language pair"] = {"en-de": {"accuracy": 0.8125, "n": 16}, "en-fr": {"accuracy": None, "n": 0}}
    result.skip("missing_image", 2)
    result.skip("missing_image")
    result.skip("empty_text", 0)
    paths = result.write(str(tmp_path), predictions=[{"pair": "en-de", "source": "bank"}])
    payload = json.loads(open(paths["json"]).read())
    assert payload["model"] == "out/stage2" and payload["data"]["revision"] == "main"
    assert payload["skipped"] == {"missing_image": 3}
    assert payload["tables"]["language pair"]["en-de"]["accuracy"] == 0.8125
    assert "transformers" in payload["environment"]
    markdown = open(paths["md"]).read()
    assert "| en-de | 0.8125 | 16 |" in markdown and "| en-fr | – | 0 |" in markdown
    assert "| missing_image | 3 |" in markdown
    assert [json.loads(line) for line in open(paths["predictions"])] == [{"pair": "en-de", "source": "bank"}]
