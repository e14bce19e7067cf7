"""`lmms-eval` end to end, as set up by `bash scripts/setup_lmms.sh`: `--model towervision` on a task YAML over a local
parquet file, and our benchmark tasks (CoMMuTE, Multi30K, ALM-Bench, ViMUL-Bench) on local copies of each benchmark's
layout, scored by lmms-eval's own pipeline (request building, generation, metrics, results) and compared with
`towervision eval` on the same data and model; lmms-eval's `llava_hf` runs one of them on a `towervision export`."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import eval_helpers
import pytest
from datasets import Dataset, Features, Image, Value

from towervision_hf.evaluation.cc_ocr import LMMS_TASKS_DIR
from towervision_hf.evaluation.cli import main as eval_main


pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None or importlib.util.find_spec("evaluate") is None,
    reason="lmms-eval is not set up: bash scripts/setup_lmms.sh",
)

TASK_YAML = """\
task: towervision_local_vqa
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  max_new_tokens: 3
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = """\
def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]
"""


@pytest.mark.slow
def test_lmms_eval_runs_a_local_task_with_the_towervision_model(tmp_path):
    model = eval_helpers.save_tiny_model(tmp_path / "model")
    features = Features({"image": Image(), "question": Value("string"), "answer": Value("string")})
    rows = {
        "image": [eval_helpers.random_image(seed) for seed in range(3)],
        "question": ["What is shown?", "Which colour?", "How many?"],
        "answer": ["noise", "red", "one"],
    }
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "vqa.parquet"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "towervision_local_vqa.yaml").write_text(TASK_YAML.format(data=tmp_path / "vqa.parquet"))
    (tasks / "utils.py").write_text(TASK_UTILS)

    command = [sys.executable, "-m", "lmms_eval", "--model", "towervision", "--model_args", f"pretrained={model}"]
    command += ["--tasks", "towervision_local_vqa", "--include_path", str(tasks), "--batch_size", "2"]
    command += ["--device", "cpu", "--output_path", str(tmp_path / "results")]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (results_file,) = (tmp_path / "results").rglob("*results.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["towervision_local_vqa"]["effective"] == 3
    assert 0.0 <= results["results"]["towervision_local_vqa"]["exact_match,none"] <= 1.0
    assert results["config"]["model"] == "towervision"


# Our benchmark tasks (src/towervision_hf/evaluation/lmms_tasks) through the real lmms-eval CLI, on local copies of the
# benchmarks' layouts, against `towervision eval` on the same data and model.
BENCHMARK_TASKS = ["towervision_commute", "towervision_multi30k", "towervision_alm_bench", "towervision_vimul"]
FAKE_COMET = '''\
"""A stand-in for unbabel-comet: a system score that depends on every translation."""
from types import SimpleNamespace


def download_model(name):
    return name


class _Model:
    def predict(self, samples, batch_size, gpus, progress_bar):
        scores = [(1 + len(s["mt"])) / (2 + len(s["mt"]) + len(s["ref"])) for s in samples]
        return SimpleNamespace(scores=scores, system_score=sum(scores) / len(scores))


def load_from_checkpoint(path):
    return _Model()
'''


def lmms_eval(*arguments, cwd, env=None):
    command = [sys.executable, "-m", "lmms_eval", *arguments, "--batch_size", "1", "--device", "cpu"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=900, env=env, check=False)


def results_of(output_path):
    (results_file,) = output_path.rglob("*results.json")
    return json.loads(results_file.read_text())


def lmms_samples(output_path, task: str) -> list[dict]:
    (samples_file,) = output_path.rglob(f"*_samples_{task}.jsonl")
    return [json.loads(line) for line in samples_file.read_text().splitlines()]


def answers(output_path, task: str) -> list[str]:
    """The model's answers as lmms-eval logged them (`--log_samples`), sorted."""
    responses = [sample["filtered_resps"] for sample in lmms_samples(output_path, task)]
    return sorted(response if isinstance(response, str) else response[0] for response in responses)


def same(lmms_value: float, cli_value) -> bool:
    """lmms-eval reports what `towervision eval` leaves empty (None) as NaN."""
    return math.isnan(lmms_value) if cli_value is None else lmms_value == cli_value


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The four benchmarks' local copies, scored by lmms-eval (`--model towervision`) and by `towervision eval`."""
    root = tmp_path_factory.mktemp("lmms-benchmarks")
    data = {
        "commute": eval_helpers.write_commute(root / "commute"),
        "multi30k": eval_helpers.write_multi30k(root / "multi30k"),
        "alm-bench": eval_helpers.write_alm_bench(root / "alm"),
        "vimul": eval_helpers.write_vimul(root / "vimul"),
    }
    video_root = str(root / "vimul" / "videos")
    model = eval_helpers.save_tiny_model(root / "model")
    fake_comet = root / "fake_comet"
    (fake_comet / "comet").mkdir(parents=True)
    (fake_comet / "comet" / "__init__.py").write_text(FAKE_COMET)

    tasks = root / "tasks"
    local = ["lmms-tasks", "--out", str(tasks), "--video-root", video_root]
    for name, path in data.items():
        local += [f"--{name}", path]
    assert eval_main(local) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_comet), os.environ.get("PYTHONPATH", "")])}
    run = lmms_eval(
        "--model",
        "towervision",
        "--model_args",
        f"pretrained={model}",
        "--tasks",
        ",".join(BENCHMARK_TASKS),
        "--include_path",
        str(tasks),
        "--gen_kwargs",
        "max_new_tokens=4",
        "--log_samples",
        "--output_path",
        str(root / "lmms"),
        cwd=root,
        env=env,
    )
    assert run.returncode == 0 and "Error during evaluation" not in run.stderr, run.stderr[-3000:]

    cli = {}
    sys.path.insert(0, str(fake_comet))
    try:
        for task, path in data.items():
            extra = {"commute": [], "vimul": ["--video-root", video_root, "--max-new-tokens", "4"]}
            argv = [task, "--model", model, "--data", path, "--output-dir", str(root / "cli"), "--batch-size", "1"]
            assert eval_main(argv + extra.get(task, ["--max-new-tokens", "4"])) == 0
            payload = json.loads((root / "cli" / f"{task}.json").read_text())
            predictions = (root / "cli" / f"{task}.predictions.jsonl").read_text().splitlines()
            cli[task] = payload, [json.loads(line) for line in predictions]
    finally:
        sys.path.remove(str(fake_comet))
        sys.modules.pop("comet", None)
    return {"lmms": results_of(root / "lmms"), "samples": root / "lmms", "cli": cli}


@pytest.mark.slow
def test_lmms_eval_lists_our_benchmark_tasks(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--tasks", "list", "--include_path", LMMS_TASKS_DIR],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    listed = set(re.findall(r"^ - (\S+)$", run.stdout + run.stderr, re.MULTILINE))
    assert set(BENCHMARK_TASKS) <= listed
    assert {"towervision_commute_en_zh", "towervision_multi30k_en_cs"} <= listed


@pytest.mark.slow
def test_commute_task_scores_like_towervision_eval(scored):
    (payload, predictions), results = scored["cli"]["commute"], scored["lmms"]["results"]
    table = payload["tables"]["language pair"]
    for pair in ("de", "fr"):
        assert results[f"towervision_commute_en_{pair}"]["accuracy,none"] == table[f"en-{pair}"]["accuracy"]
        assert scored["lmms"]["n-samples"][f"towervision_commute_en_{pair}"]["effective"] == table[f"en-{pair}"]["n"]
    assert results["towervision_commute"]["accuracy,none"] == table["average"]["accuracy"]
    assert {table["en-de"]["accuracy"], table["en-fr"]["accuracy"]} == {0.0, 1.0}  # a score that can tell them apart
    # the same two numbers per item: lmms-eval's loss is the CLI's mean log-probability, negated (and negated back)
    kinds = ("correct", "incorrect")
    samples = lmms_samples(scored["samples"], "towervision_commute_en_de")
    assert sorted(sample["accuracy"][kind] for sample in samples for kind in kinds) == sorted(
        p[kind]["mean_logprob"] for p in predictions if p["pair"] == "en-de" for kind in kinds
    )


@pytest.mark.slow
def test_multi30k_task_scores_like_towervision_eval(scored):
    (payload, predictions), results = scored["cli"]["multi30k"], scored["lmms"]["results"]
    for pair, row in payload["tables"]["language pair"].items():
        task = f"towervision_multi30k_{pair.replace('-', '_')}"
        assert row["xcomet"] is not None and not math.isnan(row["xcomet"])  # the stand-in COMET ran on both sides
        for metric in ("xcomet", "chrf", "bleu"):
            assert results[task][f"{metric},none"] == row[metric], (pair, metric)
        assert answers(scored["samples"], task) == sorted(p["translation"] for p in predictions if p["pair"] == pair)


@pytest.mark.slow
def test_alm_bench_task_scores_like_towervision_eval(scored):
    (payload, predictions), results = scored["cli"]["alm-bench"], scored["lmms"]["results"]
    headline = payload["tables"]["headline"]["closed-form accuracy"]
    for column in ("en", "multilingual", "multilingual_all"):
        assert same(results["towervision_alm_bench"][f"{column},none"], headline[column]), column
    logged = answers(scored["samples"], "towervision_alm_bench")
    assert logged == sorted(p["prediction"] for p in predictions) and len(logged) == 6


@pytest.mark.slow
def test_vimul_task_scores_like_towervision_eval(scored):
    (payload, predictions), results = scored["cli"]["vimul"], scored["lmms"]["results"]
    overall = payload["tables"]["headline"]["all languages"]
    for metric in ("mcq_accuracy", "judge_score", "score"):
        assert same(results["towervision_vimul"][f"{metric},none"], overall[metric]), metric
    logged = answers(scored["samples"], "towervision_vimul")
    assert logged == sorted(p["prediction"] for p in predictions) and len(logged) == 3


@pytest.mark.slow
def test_a_baseline_model_class_runs_our_task_on_an_exported_towervision(tmp_path):
    """lmms-eval's own `llava_hf` on `towervision export --format llava_next`: ALM-Bench and Multi30K from local
    copies (its chat class has no log-likelihood, so CoMMuTE is not among them)."""
    from towervision_hf.checkpoint.convert import export_checkpoint

    model = eval_helpers.save_tiny_model(tmp_path / "model")
    export_checkpoint(model, tmp_path / "export", "llava_next", log=lambda line: None)
    tasks = tmp_path / "tasks"
    alm, multi30k = eval_helpers.write_alm_bench(tmp_path / "alm"), eval_helpers.write_multi30k(tmp_path / "m30k")
    assert eval_main(["lmms-tasks", "--out", str(tasks), "--alm-bench", alm, "--multi30k", multi30k]) == 0
    run = lmms_eval(
        "--model",
        "llava_hf",
        "--model_args",
        f"pretrained={tmp_path / 'export'},device_map=cpu",
        "--tasks",
        "towervision_alm_bench,towervision_multi30k",
        "--include_path",
        str(tasks),
        "--gen_kwargs",
        "max_new_tokens=4",
        "--output_path",
        str(tmp_path / "results"),
        cwd=tmp_path,
    )
    assert run.returncode == 0 and "Error during evaluation" not in run.stderr, run.stderr[-3000:]
    results = results_of(tmp_path / "results")
    assert results["config"]["model"] == "llava_hf"
    assert results["n-samples"]["towervision_alm_bench"]["effective"] == 6
    assert 0.0 <= results["results"]["towervision_alm_bench"]["en,none"] <= 1.0
    assert results["n-samples"]["towervision_multi30k_en_de"]["effective"] == 2  # the CLI's rows for the pair
    assert 0.0 <= results["results"]["towervision_multi30k_en_de"]["chrf,none"] <= 100.0


@pytest.mark.slow
def test_lmms_eval_exits_0_when_evaluation_fails_and_writes_no_results(tmp_path):
    """Upstream behaviour docs/evaluation.md warns about: check for the results file, not the exit status."""
    features = Features({"file_name": Image(), "Language": Value("string"), "Question_Type": Value("string")})
    rows = {"file_name": [eval_helpers.random_image(0)], "Language": ["Klingon"], "Question_Type": ["Riddle"]}
    Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "broken.parquet"))
    tasks = tmp_path / "tasks"
    assert eval_main(["lmms-tasks", "--out", str(tasks), "--alm-bench", str(tmp_path / "broken.parquet")]) == 0
    model = eval_helpers.save_tiny_model(tmp_path / "model")
    run = lmms_eval(
        "--model",
        "towervision",
        "--model_args",
        f"pretrained={model}",
        "--tasks",
        "towervision_alm_bench",
        "--include_path",
        str(tasks),
        "--output_path",
        str(tmp_path / "results"),
        cwd=tmp_path,
    )
    assert run.returncode == 0
    assert "towervision_alm_bench: no row of the data can be scored" in run.stdout + run.stderr
    assert "Error during evaluation" in run.stdout + run.stderr  # what docs/evaluation.md says to grep for
    assert not list(tmp_path.rglob("*results.json"))
