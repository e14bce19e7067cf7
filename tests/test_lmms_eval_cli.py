"""`lmms-eval --model towervision` end to end, as set up by `bash scripts/setup_lmms.sh`: one of our task YAMLs
over a local parquet file, scored by lmms-eval's own pipeline (request building, generation, metrics, results)."""

import importlib.util
import json
import subprocess
import sys

import eval_helpers
import pytest
from datasets import Dataset, Features, Image, Value

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
