"""The lmms-eval plugin: entry-point registration (real lmms-eval registry when installed) and the request API.

Requests are lmms-eval `Instance`s when lmms-eval is importable; otherwise a minimal stand-in with the same
`.args` tuples (the only attribute the plugin reads), so the behaviour is tested either way.
"""

import importlib.util
import os
from dataclasses import dataclass

import eval_helpers
import pytest
import torch

from towervision_hf.evaluation.lmms_plugin import TowerVision
from towervision_hf.evaluation.scoring import score_continuations, user_prompt


ENTRY_POINT = "towervision_hf.evaluation.lmms_plugin:lmms_manifest"
HAS_LMMS = importlib.util.find_spec("lmms_eval") is not None


@dataclass
class MinimalInstance:
    """What lmms-eval's `Instance` exposes to a model: `request_type` and `args` (lmms_eval/api/instance.py)."""

    request_type: str
    arguments: tuple

    @property
    def args(self):
        return self.arguments


def request(request_type, arguments, doc_id):
    if HAS_LMMS:
        from lmms_eval.api.instance import Instance

        metadata = {"task": "tiny_task", "doc_id": doc_id, "repeats": 1}
        return Instance(request_type=request_type, arguments=arguments, idx=0, metadata=metadata)
    return MinimalInstance(request_type, arguments)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    model = TowerVision(pretrained=eval_helpers.save_tiny_model(root / "model"), batch_size="2", max_frames_num=4)
    video = eval_helpers.write_video(root / "clip.mp4")
    docs = [
        {"image": eval_helpers.random_image(0), "answer": "aaaa"},
        {"image": eval_helpers.random_image(1, (64, 40)), "answer": "zzzz"},
        {"video": video, "answer": "aaaa"},
    ]
    model.task_dict = {"tiny_task": {"test": docs}}
    return model


def to_visual(doc):
    return [doc["image"]] if "image" in doc else [doc["video"]]


def test_pyproject_declares_the_entry_point():
    tomllib = pytest.importorskip("tomllib")
    pyproject = os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")
    with open(pyproject, "rb") as handle:
        entry_points = tomllib.load(handle)["project"]["entry-points"]["lmms_eval.models"]
    assert entry_points == {"towervision": ENTRY_POINT}


@pytest.mark.skipif(not HAS_LMMS, reason="lmms-eval (optional extra) is not installed")
def test_lmms_eval_registry_resolves_the_plugin(tmp_path, monkeypatch):
    """lmms-eval discovers `towervision` through the `lmms_eval.models` entry-point group and validates the class."""
    from lmms_eval.api.model import lmms
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    dist_info = tmp_path / "towervision_plugin_probe-0.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: towervision-plugin-probe\nVersion: 0.0.0\n")
    (dist_info / "entry_points.txt").write_text(f"[lmms_eval.models]\ntowervision = {ENTRY_POINT}\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    model_class = registry.get_model_class("towervision")
    assert model_class is TowerVision and issubclass(model_class, lmms) and model_class.is_simple
    assert registry.resolve("towervision").model_type == "simple"


def test_loglikelihood_returns_mean_nll_by_default_and_log_probs_on_request(plugin):
    requests = [
        request("loglikelihood", ("Which word?", "aaaa", to_visual, 0, "tiny_task", "test"), 0),
        request("loglikelihood", ("Which word?", lambda doc: doc["answer"], to_visual, 1, "tiny_task", "test"), 1),
    ]
    docs = plugin.task_dict["tiny_task"]["test"]
    expected = score_continuations(
        plugin.model,
        plugin.processor,
        [user_prompt("Which word?", [docs[0]["image"]]), user_prompt("Which word?", [docs[1]["image"]])],
        ["aaaa", "zzzz"],
    )
    losses = plugin.loglikelihood(requests)
    assert [loss for loss, _ in losses] == pytest.approx([-score.mean_logprob for score in expected], abs=1e-5)
    assert all(loss > 0 and isinstance(greedy, bool) for loss, greedy in losses)

    plugin.loglikelihood_score = "sum_logprob"
    try:
        logprobs = plugin.loglikelihood(requests)
    finally:
        plugin.loglikelihood_score = "mean_nll"
    assert [value for value, _ in logprobs] == pytest.approx([score.sum_logprob for score in expected], abs=1e-4)


def test_multiple_choice_argmin_picks_the_likely_choice(plugin):
    """lmms-eval's multiple_choice aggregation takes argmin of what loglikelihood returns: the default must agree."""
    bias = torch.zeros(plugin.model.get_output_embeddings().out_features)
    bias[plugin.processor.tokenizer("a", add_special_tokens=False)["input_ids"]] = 8.0
    handle = plugin.model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        choices = [" zzzz", " aaaa", " zaza"]
        lls = plugin.loglikelihood(
            [
                request("loglikelihood", ("Pick one", choice, to_visual, 0, "tiny_task", "test"), 0)
                for choice in choices
            ]
        )
    finally:
        handle.remove()
    assert min(range(3), key=lambda i: lls[i][0]) == 1


def test_generate_until_batches_images_and_videos(plugin):
    prompt = plugin._prompt("<image>\nDescribe.", [plugin.task_dict["tiny_task"]["test"][0]["image"]], "doc 0")
    assert prompt.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe."}]

    bias = torch.zeros(plugin.model.get_output_embeddings().out_features)
    bias[plugin.processor.tokenizer("a", add_special_tokens=False)["input_ids"]] = 100.0
    handle = plugin.model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        answers = plugin.generate_until(
            [
                request(
                    "generate_until",
                    (
                        "<image>\nDescribe.",
                        {"until": ["\n\n"], "max_new_tokens": 3},
                        to_visual,
                        0,
                        "tiny_task",
                        "test",
                    ),
                    0,
                ),
                request(
                    "generate_until",
                    ("Describe.", {"until": ["aa"], "max_new_tokens": 3}, to_visual, 1, "tiny_task", "test"),
                    1,
                ),
                request(
                    "generate_until",
                    ("What happens?", {"max_new_tokens": 2, "temperature": 0}, to_visual, 2, "tiny_task", "test"),
                    2,
                ),
                request(
                    "generate_until",
                    ("Describe.", {"until": ["\n\n"], "max_new_tokens": 3}, to_visual, 1, "tiny_task", "test"),
                    1,
                ),
            ]
        )
    finally:
        handle.remove()
    assert answers == ["aaa", "", "aa", "aaa"]  # per-request settings and stop strings, video decoded from its path


def test_generate_until_multi_round_follows_doc_to_text(plugin):
    calls = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        calls.append((round_idx, list(previous_output)))
        terminal = round_idx >= 2
        return [doc["image"]], f"Round {round_idx}: go on.", terminal, previous_output, {"round": round_idx}

    arguments = ("Round 0: start.", {"max_new_tokens": 2}, to_visual, doc_to_text, 0, "tiny_task", "test")
    (outputs,) = plugin.generate_until_multi_round([request("generate_until_multi_round", arguments, 0)])
    assert isinstance(outputs, tuple) and len(outputs) == 2
    assert [round_idx for round_idx, _ in calls] == [1, 2] and len(calls[1][1]) == 2


def test_bad_visuals_and_settings_are_named(plugin, tmp_path):
    with pytest.raises(ValueError, match="unsupported visual of type int"):
        plugin._prompt("x", [3], "tiny_task/test/0")
    with pytest.raises(ValueError, match="cannot decode video"):
        plugin._prompt("x", [str(tmp_path / "missing.mp4")], "tiny_task/test/0")
    with pytest.raises(ValueError, match="loglikelihood_score='loss'"):
        TowerVision(pretrained="unused", loglikelihood_score="loss")
