"""Each benchmark end to end through `towervision eval ...` on local fixtures in the benchmark's own layout."""

import json
import math
import os
import re
import sys
import types

import eval_helpers
import pytest
import torch
from datasets import Dataset, Features, Image, Value

from towervision_hf.evaluation import alm_bench, vimul
from towervision_hf.evaluation.cli import check_coverage, main
from towervision_hf.evaluation.commute import evaluate_commute
from towervision_hf.evaluation.multi30k import evaluate_multi30k
from towervision_hf.evaluation.results import RunResult
from towervision_hf.evaluation.sources import load_splits


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return {
        "root": root,
        "model": eval_helpers.save_tiny_model(root / "model"),
        "commute": eval_helpers.write_commute(root / "commute"),
        "multi30k": eval_helpers.write_multi30k(root / "multi30k"),
        "alm": eval_helpers.write_alm_bench(root / "alm"),
        "vimul": eval_helpers.write_vimul(root / "vimul"),
    }


@pytest.fixture(scope="module")
def tiny():
    return eval_helpers.build_tiny_model_and_processor()


def _run(task, workspace, *extra):
    out = workspace["root"] / f"out-{task}"
    assert main([task, "--model", workspace["model"], "--output-dir", str(out), *extra]) == 0
    payload = json.loads((out / f"{task}.json").read_text())
    assert (out / f"{task}.md").read_text().startswith(f"# {task}")
    return payload, out


def test_commute_cli(workspace):
    payload, out = _run("commute", workspace, "--data", workspace["commute"])
    table = payload["tables"]["language pair"]
    assert set(table) == {"en-de", "en-fr", "average"}
    assert (table["en-de"]["n"], table["en-fr"]["n"], table["average"]["n"]) == (3, 2, 5)
    assert 0 <= table["en-de"]["accuracy"] <= 1 and 0 <= table["en-de"]["accuracy_sum"] <= 1
    assert payload["skipped"] == {"missing_image": 1, "empty_text": 1, "unknown_language": 1}
    assert payload["data"]["rows"] == {"de": 5, "fr": 2, "xx": 1}
    assert len((out / "commute.predictions.jsonl").read_text().splitlines()) == 5


def test_commute_requested_languages_and_missing_pairs(workspace):
    payload, _ = _run("commute", workspace, "--data", workspace["commute"], "--langs", "fr,ru")
    assert set(payload["tables"]["language pair"]) == {"en-fr", "average"}
    assert any("en-ru" in note for note in payload["notes"])


def test_commute_from_a_save_to_disk_copy_scores_like_the_hub_layout(workspace):
    """The usual offline copy (`DatasetDict.save_to_disk`) keeps its per-language splits."""
    splits, _ = load_splits(workspace["commute"])
    saved = workspace["root"] / "commute-saved"
    splits.save_to_disk(str(saved))
    from_parquet, _ = _run("commute", workspace, "--data", workspace["commute"])
    from_disk, _ = _run("commute", workspace, "--data", str(saved))
    assert from_disk["data"]["kind"] == "save_to_disk"
    assert from_disk["tables"] == from_parquet["tables"] and from_disk["skipped"] == from_parquet["skipped"]


@pytest.mark.parametrize(
    "task, extra, message",
    [
        ("commute", ["--langs", "ru,zh"], r"CoMMuTE: no split of the data matches en-ru, en-zh; its splits are"),
        ("multi30k", ["--pairs", "en-ja,en-xx"], r"Multi30K: none of the pairs en-ja, en-xx is in the data"),
    ],
)
def test_runs_where_no_pair_matches_fail_before_loading_the_model(workspace, tmp_path, task, extra, message, capsys):
    argv = [task, "--model", "absent", "--data", workspace[task], "--output-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())  # no empty result written


def _contrastive_split(correct: str, incorrect: str) -> dict:
    features = Features({name: Value("string") for name in ("source", "correct_translation", "incorrect_translation")})
    features["image"] = Image()
    rows = [
        {
            "source": "The bank.",
            "correct_translation": correct,
            "incorrect_translation": incorrect,
            "image": eval_helpers.random_image(i),
        }
        for i in range(3)
    ]
    return {"de": Dataset.from_list(rows, features=features)}


@pytest.mark.parametrize("boosted, expected", [("a", 1.0), ("z", 0.0)])
def test_commute_accuracy_on_a_pair_whose_answer_is_known(tiny, boosted, expected):
    model, processor = tiny
    token_ids = processor.tokenizer(boosted, add_special_tokens=False)["input_ids"]
    bias = torch.zeros(model.get_output_embeddings().out_features)
    bias[token_ids] = 8.0
    handle = model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        result = RunResult("commute", "tiny", {}, {})
        evaluate_commute(model, processor, _contrastive_split("aaaa", "zzzz"), result)
    finally:
        handle.remove()
    row = result.tables["language pair"]["en-de"]
    assert (row["accuracy"], row["accuracy_sum"], row["n"]) == (expected, expected, 3)


def test_multi30k_cli(workspace):
    payload, out = _run(
        "multi30k",
        workspace,
        "--data",
        workspace["multi30k"],
        "--pairs",
        "en-de,en-fr,en-cs,en-xx",
        "--max-new-tokens",
        "4",
        "--no-comet",
    )
    table = payload["tables"]["language pair"]
    assert set(table) == {"en-de", "en-fr", "en-cs"}
    assert (table["en-de"]["n"], table["en-fr"]["n"], table["en-cs"]["n"]) == (2, 3, 3)
    assert all(0 <= row["chrf"] <= 100 and 0 <= row["bleu"] <= 100 for row in table.values())
    assert payload["skipped"] == {"missing_image": 3, "empty_reference": 1, "unknown_language": 4}
    assert any("not run: --no-comet" in note for note in payload["notes"])
    assert payload["tables"]["headline"] == {"comet": {"en-de": None, "en-fr": None, "en-cs": None}}
    assert len((out / "multi30k.predictions.jsonl").read_text().splitlines()) == 8


def test_multi30k_without_the_comet_extra_fails_in_one_line_before_loading(workspace, tmp_path, capsys):
    argv = ["multi30k", "--model", "absent", "--data", workspace["multi30k"], "--output-dir", str(tmp_path)]
    assert main(argv) == 2  # unbabel-comet is not installed here
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "towervision-hf[comet]" in err and "--no-comet" in err
    assert not list(tmp_path.iterdir())


def test_multi30k_whose_comet_fails_for_every_pair_exits_1(workspace, tmp_path, monkeypatch, capsys):
    from towervision_hf.evaluation import cli, multi30k

    def failing_comet(*args, **kwargs):
        raise RuntimeError("the checkpoint is gated")

    find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: object() if name == "comet" else find_spec(name))
    monkeypatch.setattr(multi30k, "comet_system_score", failing_comet)
    argv = [
        "multi30k",
        "--model",
        workspace["model"],
        "--data",
        workspace["multi30k"],
        "--pairs",
        "en-de",
        "--max-new-tokens",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: the headline metric was scored for no pair (COMET (Unbabel/XCOMET-XL) failed for en-de" in err
    assert json.loads((tmp_path / "multi30k.json").read_text())["tables"]["language pair"]["en-de"]["chrf"] >= 0


def test_multi30k_comet_seam(tiny, monkeypatch):
    calls = {}

    class FakeComet:
        def predict(self, samples, batch_size, gpus, progress_bar):
            calls["samples"] = samples
            return types.SimpleNamespace(scores=[0.5] * len(samples), system_score=0.5)

    fake = types.ModuleType("comet")
    fake.download_model = lambda name: calls.setdefault("model", name) and f"/ckpt/{name}"
    fake.load_from_checkpoint = lambda path: FakeComet()
    monkeypatch.setitem(sys.modules, "comet", fake)
    features = Features({"en": Value("string"), "de": Value("string"), "image": Image()})
    split = Dataset.from_list(
        [{"en": "A dog.", "de": "Ein Hund.", "image": eval_helpers.random_image(0)}], features=features
    )
    model, processor = tiny
    result = RunResult("multi30k", "tiny", {}, {})
    predictions = evaluate_multi30k(
        model, processor, split, result, [("en", "de")], max_new_tokens=3, comet_model="Unbabel/XCOMET-XL"
    )
    row = result.tables["language pair"]["en-de"]
    assert list(row)[:3] == ["xcomet", "bleu", "chrf"] and row["xcomet"] == 50.0  # headline first, x 100 (Table 2)
    assert result.tables["headline"] == {"xcomet": {"en-de": 50.0}}
    assert calls["model"] == "Unbabel/XCOMET-XL"
    assert calls["samples"] == [{"src": "A dog.", "mt": predictions[0]["translation"], "ref": "Ein Hund."}]


def test_alm_bench_cli_with_plot(workspace):
    plot = workspace["root"] / "plots" / "alm.png"
    payload, out = _run(
        "alm-bench", workspace, "--data", workspace["alm"], "--max-new-tokens", "4", "--plot", str(plot)
    )
    assert set(payload["tables"]["language"]) == {"English", "German"}  # the paper's 23 languages by default
    assert payload["tables"]["language"]["English"]["n"] == 4 and payload["tables"]["language"]["German"]["n"] == 2
    assert set(payload["tables"]["question type"]) == {"mcq", "tf", "short", "long"}
    assert payload["tables"]["headline"]["closed-form accuracy"]["languages"] == 2
    assert payload["skipped"] == {
        "missing_image": 1,
        "unknown_question_type": 1,
        "unparsable_mcq_answer": 1,
        "open_ended_unjudged": 2,
        "unknown_language": 1,  # the Klingon row
    }
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert not any("alm.png" in note for note in payload["notes"])  # a local file: never published with the results


def test_alm_bench_all_languages_is_opt_in(workspace):
    payload, _ = _run("alm-bench", workspace, "--data", workspace["alm"], "--max-new-tokens", "2", "--langs", "all")
    assert set(payload["tables"]["language"]) == {"English", "German", "Klingon"}


def test_paper_languages_are_footnote_4_and_table_2():
    from towervision_hf.evaluation.languages import PAPER_LANGUAGES, language_code

    footnote_4 = "German, Spanish, French, Italian, Korean, Dutch, Russian, English, Portuguese, Chinese, Icelandic, "
    footnote_4 += "Czech, Ukrainian, Hindi, Japanese, Polish, Swedish, Hungarian, Romanian, Danish, Finnish"
    # + Chinese (Traditional) as a second zh language and Norwegian (Nynorsk), matched by nb or nn: 23
    assert set(PAPER_LANGUAGES["alm-bench"]) == {language_code(name) for name in footnote_4.split(", ")} | {"nb", "nn"}
    assert PAPER_LANGUAGES["commute"] == ("de", "fr", "ru", "zh")


def test_alm_bench_language_selection(workspace):
    payload, _ = _run("alm-bench", workspace, "--data", workspace["alm"], "--max-new-tokens", "2", "--langs", "de,xx")
    assert set(payload["tables"]["language"]) == {"German"}
    assert payload["skipped"]["unknown_language"] == 1  # the Klingon row
    assert payload["skipped"]["unknown_requested_language"] == 1  # "xx"


ALM_ANSWERS = {
    "Which dish is shown?": "paella",
    "Is this a festival?": "True!",
    "Welches Gericht?": "Knödel",
    "Ist das eine Burg?": "Falsch, das ist eine Kirche",
}


def _answer_known_questions(model, processor, prompts, **kwargs):
    texts = [prompt.messages[0]["content"][-1]["text"] for prompt in prompts]
    return [next((a for q, a in ALM_ANSWERS.items() if q in text), "something") for text in texts]


def test_alm_bench_without_a_judge_grades_closed_form_answers_by_matching(workspace, tiny, monkeypatch):
    """With answers known in advance, MCQ / TF come out right, wrong TF wrong, and open-ended stay unscored."""
    monkeypatch.setattr(alm_bench, "generate", _answer_known_questions)
    splits, _ = load_splits(workspace["alm"])
    result = RunResult("alm-bench", "tiny", {}, {})
    records = alm_bench.evaluate_alm_bench(*tiny, splits["test"], result)
    english, german = result.tables["language"]["English"], result.tables["language"]["German"]
    assert (english["mcq_accuracy"], english["tf_accuracy"], english["judge_score"]) == (1.0, 1.0, None)
    assert (german["mcq_accuracy"], german["tf_accuracy"]) == (0.0, 1.0)
    headline = result.tables["headline"]["closed-form accuracy"]
    assert headline == {"en": 1.0, "multilingual": 0.5, "multilingual_all": 0.75, "languages": 2}
    assert result.skipped["open_ended_unjudged"] == 3 and len(records) == 7  # English short + long, Klingon


def test_alm_bench_prompts_and_judge_prompts_are_the_authors(workspace, tiny, monkeypatch):
    """The model sees the ALM-Bench authors' instructions; with a judge every answer is graded with their prompt for
    its question type, closed-form ones included, and open-ended grades stay out of the headline."""
    seen = []

    def generate(model, processor, prompts, **kwargs):
        seen.extend(prompt.messages[0]["content"][-1]["text"] for prompt in prompts)
        return _answer_known_questions(model, processor, prompts)

    class AuthorsJudge:  # grades like GPT-4o would: 10 or 0 on a meaning match, 8 for the open answers
        def __init__(self):
            self.prompts = []

        def grade(self, prompt):
            self.prompts.append(prompt)
            if "if it matches give a 10. Otherwise 0." in prompt:
                truth = prompt.split("Ground Truth: ")[1].split("\n")[0]
                return float(truth.lower() in prompt.split("Model Prediction: ")[1].lower())
            return 0.8

    monkeypatch.setattr(alm_bench, "generate", generate)
    splits, _ = load_splits(workspace["alm"])
    result = RunResult("alm-bench", "tiny", {}, {})
    judge = AuthorsJudge()
    alm_bench.evaluate_alm_bench(*tiny, splits["test"], result, judge=judge)
    mcq = next(text for text in seen if "Which dish" in text)
    assert mcq == (
        "For the given Multiple Choice Question, analyze the question and answer strictly from one of the options "
        "below. Strictly answer the choice only. No additional text.\nWhich dish is shown?\n"
        "Options: Paella, Sushi, Tacos"
    )
    assert next(text for text in seen if "Ist das" in text) == (
        "Ist das eine Burg?\nThe above question is a True/False question. Please provide the answer as one word in "
        "German"
    )
    long_prompt = next(text for text in seen if "Describe" in text)
    assert long_prompt.endswith("\nAnswer the question in detail in English language.")
    assert len(judge.prompts) == 7 and sum("Consistency, Fluency, and Relevance" in p for p in judge.prompts) == 1
    assert any("Ground Truth: Paella\n" in prompt for prompt in judge.prompts)  # the gold option, not the listing
    english = result.tables["language"]["English"]
    assert (english["mcq_accuracy"], english["tf_accuracy"], english["judge_score"]) == (1.0, 1.0, 0.8)
    assert result.tables["headline"]["closed-form accuracy"]["multilingual"] == 0.5  # the judge's 0.8 stays out
    assert "open_ended_unjudged" not in result.skipped


def test_vimul_cli(workspace):
    video_root = os.path.join(os.path.dirname(workspace["vimul"]), "videos")
    payload, out = _run(
        "vimul",
        workspace,
        "--data",
        workspace["vimul"],
        "--video-root",
        video_root,
        "--max-new-tokens",
        "3",
        "--num-frames",
        "4",
    )
    assert set(payload["tables"]["language"]) == {"english", "spanish"}
    assert payload["tables"]["question type"]["mcq"]["n_mcq"] == 2
    assert payload["skipped"] == {"missing_video": 1, "unparsable_mcq_answer": 1, "open_ended_unjudged": 1}
    assert any("--judge-endpoint" in note for note in payload["notes"])
    assert len((out / "vimul.predictions.jsonl").read_text().splitlines()) == 3


def test_vimul_embedded_videos_decode_without_torchcodec(workspace):
    data = eval_helpers.write_vimul_embedded(workspace["root"] / "vimul-embedded")
    payload, _ = _run("vimul", workspace, "--data", data, "--max-new-tokens", "2", "--num-frames", "3")
    assert payload["tables"]["language"]["german"]["n_mcq"] == 1
    assert payload["skipped"] == {"missing_video": 1}  # the undecodable bytes


def test_vimul_scores_known_answers_with_a_judge(workspace, tiny, monkeypatch):
    seen_frames = []

    def fake_generate(model, processor, prompts, **kwargs):
        seen_frames.extend(video.shape for prompt in prompts for video in prompt.videos)
        replies = {"Which festival": "B. Holi", "¿Qué se vende?": "A", "What happens": "People shop."}
        texts = [prompt.messages[0]["content"][-1]["text"] for prompt in prompts]
        return [next(r for q, r in replies.items() if text.startswith(q)) for text in texts]

    class FakeJudge:
        def score(self, question, reference, prediction):
            return 0.6 if prediction == "People shop." else 0.0

    monkeypatch.setattr(vimul, "generate", fake_generate)
    splits, _ = load_splits(workspace["vimul"])
    result = RunResult("vimul", "tiny", {}, {})
    video_root = os.path.join(os.path.dirname(workspace["vimul"]), "videos")
    vimul.evaluate_vimul(*tiny, dict(splits), result, judge=FakeJudge(), video_root=video_root, num_frames=5)
    english, spanish = result.tables["language"]["english"], result.tables["language"]["spanish"]
    assert (english["mcq_accuracy"], english["judge_score"], spanish["mcq_accuracy"]) == (1.0, 0.6, 1.0)
    # the paper's Table 3 number: per language, MCQ and open-ended averaged; Spanish has no open-ended answer
    assert result.tables["headline"]["score"] == {"english": 0.8, "spanish": None}
    assert seen_frames == [(5, 32, 48, 3)] * 3  # 5 uniformly sampled frames, also from a 3-frame video


def test_a_commute_shard_without_its_language_fails_before_loading_the_model(workspace, capsys):
    """A CoMMuTE shard given as one file is split 'test', not a language: the run stops before the model loads."""
    shard = os.path.join(workspace["commute"], "data", "de-00000-of-00001.parquet")
    out = workspace["root"] / "out-commute-file"
    assert main(["commute", "--model", "absent", "--data", shard, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no split of the data matches" in err and "'test'" in err
    assert not out.exists()


def test_vimul_without_video_root_fails_with_the_fix(workspace, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative video paths resolve against nothing that holds them
    argv = ["vimul", "--model", workspace["model"], "--data", workspace["vimul"], "--output-dir", str(tmp_path)]
    assert main([*argv, "--num-frames", "4", "--max-new-tokens", "2"]) == 1
    err = capsys.readouterr().err
    assert "missing_video" in err and "--video-root" in err


def test_a_run_that_skips_most_items_warns_with_the_top_reason(capsys):
    result = RunResult("vimul", "tiny", {}, {})
    result.skip("missing_video", 3)
    result.skip("empty_question_or_answer")
    assert check_coverage(result, [{"score": 1.0}, {"score": None}]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 of 5 items were skipped, most as missing_video (3)" in err and "--video-root" in err
    assert check_coverage(result, [{"score": 1.0}] * 4) == 0 and capsys.readouterr().err == ""


def test_data_that_lacks_the_benchmark_columns_is_a_one_line_error(workspace, capsys):
    argv = ["multi30k", "--model", workspace["model"], "--data", workspace["alm"], "--split", "validation"]
    assert main(argv) == 2
    assert "--split 'validation' is not in" in capsys.readouterr().err


def test_task_help_documents_the_data_layout(capsys):
    with pytest.raises(SystemExit):
        main(["commute", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Splits are named by target language" in out and "correct_translation" in out
    assert "docs/evaluation.md" in out


def test_lmms_tasks_copy_points_each_task_at_its_local_copy(workspace, tmp_path, capsys):
    """`towervision eval lmms-tasks`: the task copy reads the local data, CoMMuTE keeps the pairs the copy has."""
    import yaml

    out = tmp_path / "tasks"
    assert main(["lmms-tasks", "--out", str(out), "--commute", workspace["commute"]]) == 0
    group = yaml.safe_load((out / "towervision_commute" / "towervision_commute.yaml").read_text())
    assert group["task"] == ["towervision_commute_en_de", "towervision_commute_en_fr"]  # no ru / zh split here
    template = yaml.safe_load((out / "towervision_commute" / "_default_template_yaml").read_text())
    assert template == {"dataset_path": workspace["commute"]}
    packaged = yaml.safe_load((out / "towervision_alm_bench" / "_default_template_yaml").read_text())
    assert packaged == {"dataset_path": "MBZUAI/ALM-Bench"}  # benchmarks not named keep the Hub data

    single = tmp_path / "commute.parquet"
    Dataset.from_dict({"source": ["A bat."]}).to_parquet(str(single))
    assert main(["lmms-tasks", "--out", str(out), "--commute", str(single)]) == 2
    assert "a single file has no per-language splits" in capsys.readouterr().err
    assert main(["lmms-tasks", "--out", str(out)]) == 2
    assert "name at least one local copy" in capsys.readouterr().err


def test_lmms_tasks_grade_with_the_judge_named_by_the_environment(monkeypatch):
    """The lmms-eval tasks' judge: `$TOWERVISION_JUDGE_ENDPOINT` (a server on 127.0.0.1), the ALM-Bench authors'
    prompt for the question's type; no endpoint, no judge (open-ended scores NaN, as the CLI leaves them empty)."""
    import http.server
    import threading

    from towervision_hf.evaluation import harness

    received = []

    class Judge(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"choices": [{"message": {"content": "7"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    record = {
        "id": "1",
        "language": "English",
        "category": "Food",
        "question_type": "long",
        "question": "Describe the dish.",
        "answer": "Rice with saffron.",
        "options": [],
    }
    doc = {harness.RECORD: json.dumps(record)}
    try:
        monkeypatch.setenv("TOWERVISION_JUDGE_ENDPOINT", f"http://127.0.0.1:{server.server_port}/v1")
        monkeypatch.setenv("TOWERVISION_JUDGE_MODEL", "judge-model")
        harness._judge.cache_clear()
        graded = harness.alm_bench_process_results(doc, ["A yellow rice dish."])["en"]["graded"]
    finally:
        server.shutdown()
        server.server_close()
        harness._judge.cache_clear()
    assert graded["score"] == 0.7 and received[0]["model"] == "judge-model"
    assert received[0]["messages"][0]["content"] == alm_bench.alm_judge_prompt(
        "long", "Describe the dish.", "Rice with saffron.", "A yellow rice dish."
    )
    monkeypatch.delenv("TOWERVISION_JUDGE_ENDPOINT")
    vimul_record = record | {"question_type": "long", "gold_index": None}
    items = [harness.vimul_process_results({harness.RECORD: json.dumps(vimul_record)}, ["Rice."])["score"]]
    assert math.isnan(harness.vimul_judge_score(items)) and math.isnan(harness.vimul_score(items))
    harness._judge.cache_clear()
