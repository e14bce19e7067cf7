"""Our lmms-eval task for CC-OCR multilingual text reading: lmms-eval's CC-OCR functions on footnote 5's languages."""

import ast
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from towervision_hf.evaluation.cc_ocr import LMMS_TASKS_DIR, paper_language_docs
from towervision_hf.evaluation.languages import CC_OCR_LANGUAGES


TASK_DIR = Path(LMMS_TASKS_DIR) / "towervision_cc_ocr"
# CC-OCR's multi_lan_ocr languages; the paper reports the 7 it supports (footnote 5)
CC_OCR_ALL = ["Arabic", "French", "German", "Italian", "Japanese", "Korean", "Portuguese", "Russian", "Spanish"]
CC_OCR_ALL.append("Vietnamese")


class FunctionLoader(yaml.SafeLoader):
    """Reads lmms-eval's `!function module.name` tags as the string `module.name`."""


FunctionLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def test_task_yaml_is_lmms_evals_cc_ocr_task_on_the_papers_languages():
    task = yaml.load((TASK_DIR / "towervision_cc_ocr_multi_lan.yaml").read_text(), Loader=FunctionLoader)
    assert (task["task"], task["dataset_path"], task["dataset_name"]) == (
        "towervision_cc_ocr_multi_lan",
        "wulipc/CC-OCR",
        "multi_lan_ocr",
    )
    assert task["process_docs"] == "!function utils.paper_language_docs"
    assert [metric["metric"] for metric in task["metric_list"]] == ["macro_f1", "micro_f1"]
    # every function the YAML names is defined or imported by the task's utils.py (lmms-eval's own, or ours)
    named = {value.split(".", 1)[1] for value in _strings(task) if value.startswith("!function utils.")}
    tree = ast.parse((TASK_DIR / "utils.py").read_text())
    imported = {
        (alias.asname or alias.name, node.module) for node in tree.body if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }  # fmt: skip
    sources = {name: module for name, module in imported}
    assert named == set(sources)
    assert {sources[name] for name in named} == {"lmms_eval.tasks.cc_ocr.utils", "towervision_hf.evaluation.cc_ocr"}


def _strings(value):
    if isinstance(value, dict):
        return [item for child in value.values() for item in _strings(child)]
    if isinstance(value, list):
        return [item for child in value for item in _strings(child)]
    return [value] if isinstance(value, str) else []


def test_only_footnote_5_languages_are_kept():
    assert set(CC_OCR_LANGUAGES) == {"German", "French", "Italian", "Russian", "Spanish", "Korean", "Portuguese"}
    rows = Dataset.from_dict({"split": CC_OCR_ALL * 2, "question": ["Read the text."] * 20})
    kept = paper_language_docs(rows)
    assert kept.num_rows == 14 and set(kept["split"]) == set(CC_OCR_LANGUAGES)


def test_data_without_the_papers_languages_is_an_error():
    with pytest.raises(ValueError, match="no CC-OCR rows in the paper's languages.*Arabic"):
        paper_language_docs(Dataset.from_dict({"split": ["Arabic", "Japanese"]}))
    with pytest.raises(ValueError, match="'split' \\(language\\) column"):
        paper_language_docs(Dataset.from_dict({"language": ["German"]}))
