"""Publishing: staging, model card, remote-code audit, the subprocess load check (pipeline included), the oldest
supported transformers, and the upload calls (a fake HfApi at the seam; everything before it runs for real)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, ModelCard
from safetensors.torch import load_file, save_file

from towervision_hf import TowerVisionConfig, TowerVisionForConditionalGeneration
from towervision_hf.checkpoint.tiny import build_tiny_processor, tiny_config
from towervision_hf.checkpoint.weights import parse_size, stage_weights, tensor_entries
from towervision_hf.evaluation.results import RunResult
from towervision_hf.hub import load_check, push, versions
from towervision_hf.hub.card import card_languages, load_evaluations, render_model_card
from towervision_hf.hub.remote_code import REMOTE_CODE_MODULES, audit_source, collect_remote_code_files, package_dir
from towervision_hf.hub.stage import stage_checkpoint
from towervision_hf.model.modeling_towervision import AUTO_MAP


REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "my-org/TowerVision-tiny-ft"
SHARD_LIMIT = 100_000
CODE_FILES = {f"{module}.py" for module in REMOTE_CODE_MODULES}
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json")
CREDENTIALS = (".env", "hf_token")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer):
    """A training output: model + processor, training state, a stale code copy, credentials, a TRL card."""
    folder = tmp_path_factory.mktemp("train_output")
    torch.manual_seed(0)
    TowerVisionForConditionalGeneration(tiny_config(tiny_tokenizer)).eval().save_pretrained(folder)
    build_tiny_processor(tiny_tokenizer).save_pretrained(folder)
    for name in TRAINING_STATE[:-1]:
        (folder / name).write_bytes(b"\x80\x04K\x01.")  # a pickle
    state = {"global_step": 120, "epoch": 1.0, "train_batch_size": 4, "log_history": [{"loss": 2.5}, {"loss": 1.75}]}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    summary = {
        "global_step": 120,
        "skipped_over_length": 3,
        "trainable_parameters": {"vision": 0, "projector": 2112, "language": 0},
    }
    (folder / "train_summary.json").write_text(json.dumps(summary))  # written by `towervision train`
    (folder / ".env").write_text("HF_TOKEN=hf_not_a_real_token\n")
    (folder / "hf_token").write_text("hf_not_a_real_token\n")
    (folder / "checkpoint-60").mkdir()
    (folder / "checkpoint-60" / "model.safetensors").write_bytes(b"intermediate")
    (folder / "modeling_towervision.py").write_text("# a stale copy written by an older towervision-hf\n")
    (folder / "README.md").write_text(
        "---\nbase_model: my-org/TowerVision-tiny\ndatasets:\n- my-org/tiny-vqa\nlibrary_name: transformers\n"
        "tags:\n- trl\n- sft\n---\n\n# Model trained with TRL\n"
    )
    return folder


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory):
    result = RunResult(
        task="multi30k",
        model="out/stage2",
        data={"source": "romrawinjp/multi30k", "kind": "hub", "config": None, "revision": "main", "rows": {"test": 3}},
        settings={"split": "test", "batch_size": 8},
        tables={"language pair": {"en-de": {"bleu": 38.25, "chrf": 61.5}, "en-fr": {"bleu": 52.0, "chrf": 70.125}}},
        notes=["bleu / chrf: sacrebleu corpus scores"],
    )
    return Path(result.write(str(tmp_path_factory.mktemp("eval")))["json"])


@pytest.fixture(scope="module")
def staged(checkpoint, eval_json, tmp_path_factory):
    return stage_checkpoint(
        checkpoint,
        tmp_path_factory.mktemp("stage") / "staged",
        repo_id=REPO_ID,
        max_shard_size=SHARD_LIMIT,
        eval_results=[eval_json],
    )


@pytest.fixture(scope="module")
def reference(staged):
    return load_check.reference_outputs(staged.path)


@pytest.fixture(scope="module")
def locked_check(staged, reference):
    return load_check.run_load_check(staged.path, reference=reference)


# ---- staging -------------------------------------------------------------------------------------------------------


def test_staged_folder_holds_exactly_the_model_files(staged, checkpoint):
    shards = {name for name in staged.files if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", name)}
    assert len(shards) > 1
    expected = {
        "README.md", "config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json", "chat_template.jinja", "model.safetensors.index.json",
    }  # fmt: skip
    assert set(staged.files) == expected | CODE_FILES | shards
    assert staged.files == {path.name: path.stat().st_size for path in staged.path.iterdir()}
    for name in TRAINING_STATE:
        assert staged.skipped[name].startswith("training state")
    for name in CREDENTIALS:
        assert staged.skipped[name] == "credentials are never uploaded"
    assert staged.skipped["checkpoint-60/"] == "sub-folders are not uploaded"
    assert staged.skipped["train_summary.json"] == "not part of a model checkpoint"
    listing = staged.listing()
    assert "model.safetensors.index.json" in listing and "hf_token: credentials are never uploaded" in listing


def test_staged_code_is_the_installed_package_code(staged):
    for name in CODE_FILES:
        assert (staged.path / name).read_bytes() == (package_dir() / name).read_bytes(), name


def test_staged_weights_are_resharded_bit_for_bit(staged, checkpoint):
    original = load_file(checkpoint / "model.safetensors")
    index = json.loads((staged.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in original.values())
    restored = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(staged.path / shard)
        payload = sum(t.numel() * t.element_size() for t in tensors.values())
        assert payload <= SHARD_LIMIT or len(tensors) == 1
        assert all(index["weight_map"][name] == shard for name in tensors)
        restored.update(tensors)
    assert set(restored) == set(original)
    for name, tensor in original.items():
        assert torch.equal(restored[name], tensor) and restored[name].dtype == tensor.dtype, name


@pytest.mark.parametrize("limit", ["5GB", None])
def test_small_weights_are_kept_as_they_are(checkpoint, tmp_path, limit):
    assert stage_weights(checkpoint, tmp_path, limit) == ["model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "size, expected", [("5GB", 5 * 10**9), ("2GiB", 2 * 2**30), ("500MB", 5 * 10**8), ("1.5 kb", 1500), (100, 100)]
)
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["five GB", "-1GB", 0])
def test_parse_size_rejects_bad_values(size):
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size(size)


def test_auto_maps_are_complete(staged):
    config = json.loads((staged.path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert config["architectures"] == ["TowerVisionForConditionalGeneration"]
    processor_config = json.loads((staged.path / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_towervision.TowerVisionProcessor"
    assert (
        processor_config["image_processor"]["auto_map"]["AutoImageProcessor"]
        == "image_processing_towervision.TowerVisionImageProcessor"
    )
    assert (
        processor_config["video_processor"]["auto_map"]["AutoVideoProcessor"]
        == "video_processing_towervision.TowerVisionVideoProcessor"
    )


def test_training_state_only_on_request(checkpoint, tmp_path):
    staged = stage_checkpoint(checkpoint, tmp_path / "staged", repo_id=REPO_ID, include_training_state=True)
    for name in TRAINING_STATE:
        assert (staged.path / name).read_bytes() == (checkpoint / name).read_bytes()
    for name in CREDENTIALS:
        assert name not in staged.files and staged.skipped[name] == "credentials are never uploaded"
    assert "model.safetensors" in staged.files  # 230 KB fit in the default 5GB shard size


def _model_only_copy(checkpoint: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(checkpoint / name, target / name)
    return target


def test_stage_rejects_native_llava_checkpoints(checkpoint, tmp_path):
    folder = _model_only_copy(checkpoint, tmp_path / "native")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llava_next"}))
    with pytest.raises(ValueError, match="towervision convert"):
        stage_checkpoint(folder, repo_id=REPO_ID)


def test_stage_rejects_lora_adapters(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="towervision merge"):
        stage_checkpoint(tmp_path, repo_id=REPO_ID)


def test_stage_rejects_weights_that_do_not_match_the_config(checkpoint, tmp_path):
    folder = _model_only_copy(checkpoint, tmp_path / "extra")
    tensors = load_file(folder / "model.safetensors")
    tensors["model.extra.weight"] = torch.zeros(2)
    del tensors["model.image_newline"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"missing tensors: \['model.image_newline'\].*unexpected tensors: \['model.extra.weight'\]"
    ):
        stage_checkpoint(folder, repo_id=REPO_ID, processor_source=checkpoint)


def test_stage_needs_a_processor(checkpoint, tmp_path):
    folder = _model_only_copy(checkpoint, tmp_path / "model_only")
    with pytest.raises(ValueError, match="--processor"):
        stage_checkpoint(folder, repo_id=REPO_ID)
    staged = stage_checkpoint(folder, tmp_path / "staged", repo_id=REPO_ID, processor_source=checkpoint)
    assert "processor_config.json" in staged.files


def test_stage_refuses_a_non_empty_output_folder(checkpoint, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        stage_checkpoint(checkpoint, tmp_path, repo_id=REPO_ID)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


def test_stage_refuses_only_safetensors_less_checkpoints(checkpoint, tmp_path):
    folder = _model_only_copy(checkpoint, tmp_path / "bin")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model.bin.*only safetensors"):
        tensor_entries(folder)


# ---- remote-code audit ---------------------------------------------------------------------------------------------


def test_package_remote_code_passes_the_audit():
    assert {path.name for path in collect_remote_code_files()} == CODE_FILES


@pytest.mark.parametrize(
    "source, message",
    [
        ("import towervision_hf\n", "imports the towervision_hf package"),
        ("from towervision_hf.model.tiling_towervision import x\n", "imports from the towervision_hf package"),
        ("from . import tiling_towervision\n", "only `from .module import X`"),
        ("from ..models import x\n", "only `from .module import X`"),
        ("from .sub.util import x\n", "sub-packages"),
        ("from .missing_module import x\n", "not one of the shipped files"),
        ("import pickle\n", "'pickle'"),
        ("from urllib.request import urlopen\n", "'urllib.request'"),
        ("import requests\n", "'requests'"),
        ("x = eval('1')\n", "calls eval()"),
        ("exec('x = 1')\n", "calls exec()"),
        ("import torch\nstate = torch.load('w.pt')\n", "calls torch.load()"),
        ("from huggingface_hub import hf_hub_download\n", "'huggingface_hub'"),
    ],
)
def test_audit_rejects(source, message):
    problems = audit_source(source, "modeling_x.py", {"modeling_x", "tiling_towervision"})
    assert any(message in str(problem) for problem in problems), problems


@pytest.mark.parametrize(
    "source, message",
    [
        ("import socket\n", "'socket'"),
        ("import requests\n", "'requests'"),
        ("from urllib.parse import urlparse\n", "'urllib.parse'"),
        ("from huggingface_hub import hf_hub_download\n", "'huggingface_hub'"),
        ("import subprocess\n", "'subprocess'"),
        ("import pickle\n", "'pickle'"),
    ],
)
def test_the_url_fetcher_may_use_only_the_standard_http_client(source, message):
    allowed = "import http.client\nimport urllib.error\nimport urllib.request\nurllib.request.urlopen('https://x')\n"
    assert audit_source(allowed, "fetching_towervision.py", {"fetching_towervision"}) == []
    problems = audit_source(allowed + source, "fetching_towervision.py", {"fetching_towervision"})
    assert [str(problem) for problem in problems] == [
        f"fetching_towervision.py:5: imports {'from ' if 'from' in source else ''}{message} (network, pickle or "
        "process access is not allowed)"
    ]
    assert audit_source(allowed, "image_processing_x.py", {"image_processing_x"})  # no other file may


def test_audit_accepts_flat_sibling_imports():
    source = "import torch\nfrom transformers import PreTrainedModel\nfrom .tiling_towervision import pooled_side\n"
    assert audit_source(source, "modeling_x.py", {"modeling_x", "tiling_towervision"}) == []


def test_collect_rejects_a_folder_with_an_unsafe_file(tmp_path):
    for path in collect_remote_code_files():
        shutil.copy(path, tmp_path / path.name)
    with open(tmp_path / "tiling_towervision.py", "a") as handle:
        handle.write("\nimport pickle\n")
    with pytest.raises(ValueError, match=r"tiling_towervision.py:\d+: imports 'pickle'"):
        collect_remote_code_files(tmp_path)
    (tmp_path / "video_processing_towervision.py").unlink()
    with pytest.raises(ValueError, match="video_processing_towervision.py is missing"):
        collect_remote_code_files(tmp_path)


# ---- model card ----------------------------------------------------------------------------------------------------


def test_model_card_metadata(staged):
    data = ModelCard.load(staged.path / "README.md").data
    assert data.language == card_languages()
    assert len(data.language) == 18 and {"en", "pt", "zh", "nb", "nn", "hi"} <= set(data.language)
    assert data.license == "cc-by-nc-sa-4.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-text-to-text"
    assert data.base_model == ["my-org/TowerVision-tiny"]  # read from the checkpoint's TRL card
    assert data.datasets == ["my-org/tiny-vqa"]
    assert {"towervision", "custom_code", "multilingual", "arxiv:2510.21849"} <= set(data.tags)
    results = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("romrawinjp/multi30k", "en-de", "bleu")] == 38.25
    assert results[("romrawinjp/multi30k", "en-fr", "chrf")] == 70.125
    assert {r.task_type for r in data.eval_results} == {"image-text-to-text"}


def test_model_card_body(staged):
    body = ModelCard.load(staged.path / "README.md").text
    for snippet in (
        f'model_id = "{REPO_ID}"',
        "AutoProcessor.from_pretrained(model_id, trust_remote_code=True)",
        "AutoModelForImageTextToText.from_pretrained(",
        '{"type": "image", "image": Image.open("photo.jpg").convert("RGB")}',
        "processor.apply_chat_template(",
        f'pipeline("image-text-to-text", model="{REPO_ID}", trust_remote_code=True)',
        f"transformers>={versions.MIN_TRANSFORMERS_VERSION}",
        "PixMo-Cap",
        "VisionBlocks",
        "LLaVA-Video-178K",
        "- optimizer steps: 120",
        "- final logged training loss: 1.75",
        "- trained parameters: vision frozen, projector 2.11K, language frozen",
        "- samples skipped as longer than max_length: 3",
        "[my-org/tiny-vqa](https://huggingface.co/datasets/my-org/tiny-vqa)",
        "[my-org/TowerVision-tiny](https://huggingface.co/my-org/TowerVision-tiny)",
        "### multi30k",
        "| language pair | bleu | chrf |",
        "| en-de | 38.25 | 61.5 |",
        "CC BY-NC-SA 4.0",
        "2510.21849",
    ):
        assert snippet in body, snippet


def test_model_card_for_a_released_size_video_model():
    config = TowerVisionConfig.from_preset("towervision-9b")
    card = render_model_card(
        config,
        repo_id="my-org/TowerVideo-9B-remote",
        num_parameters=9_400_000_000,
        dtypes=["BF16", "BF16", "F32"],
        pipeline_tag="video-text-to-text",
        license="apache-2.0",
    )
    parsed = ModelCard(card)
    assert parsed.data.pipeline_tag == "video-text-to-text"
    assert parsed.data.base_model == ["google/siglip2-so400m-patch14-384", "Unbabel/Tower-Plus-9B"]
    assert parsed.data.license == "apache-2.0"
    assert not parsed.data.eval_results
    for snippet in (
        '{"type": "video", "path": "clip.mp4"}',
        "| Videos | 32 frames of 384 px",
        "9.4B",
        "bfloat16",
        "√3584",
    ):
        assert snippet in parsed.text, snippet
    assert "CC BY-NC-SA" not in parsed.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_models": ["./outputs/stage1"]}, "base_model entries must be Hub repo ids"),
        ({"repo_id": "not-a-repo-id"}, "not a Hub repo id"),
        ({"pipeline_tag": "text-generation"}, "pipeline_tag must be one of"),
    ],
)
def test_model_card_rejects_bad_metadata(tiny_config, kwargs, message):
    arguments = {"repo_id": REPO_ID, "num_parameters": 1, "dtypes": ["F32"], **kwargs}
    with pytest.raises(ValueError, match=message):
        render_model_card(tiny_config, **arguments)


def test_hub_folder_links_the_packaged_template():
    from towervision_hf.hub.card import TEMPLATE_PATH

    assert (REPO_ROOT / "hub" / "model_card.md").resolve() == TEMPLATE_PATH


def test_evaluation_files_are_validated(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ValueError, match="broken.json cannot be read as JSON"):
        load_evaluations([tmp_path / "broken.json"])
    with pytest.raises(ValueError, match="other.json are not a `towervision eval` result"):
        load_evaluations([tmp_path / "other.json"])


# ---- load check ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_load_check_through_auto_classes_and_pipeline(locked_check, reference):
    assert locked_check.passed, locked_check.summary()
    report = locked_check.report
    assert report["towervision_hf_importable"] is False
    assert set(report["classes"]) >= {
        "config",
        "processor",
        "image_processor",
        "video_processor",
        "model",
        "pipeline_model",
    }
    assert all(name.startswith("transformers_modules.") for name in report["classes"].values())
    assert report["classes"]["model"].endswith("modeling_towervision.TowerVisionForConditionalGeneration")
    assert set(locked_check.max_logit_diff) == {"image", "video"}
    assert torch.equal(locked_check.remote["image.pipeline_generated"], reference["image.generated"])
    assert len(locked_check.tokens["image"]) == load_check.MAX_NEW_TOKENS
    # the cheap check: one tile plus the thumbnail, and the logits of each generated position
    assert reference["image.inputs.pixel_values"].shape[1] == 2
    assert locked_check.remote["image.logits"].shape[:2] == (1, load_check.MAX_NEW_TOKENS)
    assert "passed under transformers" in locked_check.summary()
    assert (report["dtype"], report["device"]) == ("float32", "cpu") and "float32 on cpu" in locked_check.summary()


@pytest.mark.slow
def test_load_check_runs_a_half_precision_checkpoint_in_float32_on_a_cpu(checkpoint, tmp_path, monkeypatch):
    model = TowerVisionForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    build_tiny_processor().save_pretrained(tmp_path / "bf16")
    staged = stage_checkpoint(tmp_path / "bf16", tmp_path / "staged", repo_id=REPO_ID)
    assert load_check.check_dtype(staged.path) == "float32"  # bfloat16 matmuls are emulated on most CPUs
    result = load_check.run_load_check(staged.path)
    assert result.passed, result.summary()
    assert result.report["dtype"] == "float32" and "float32 on cpu" in result.summary()

    # where its float32 copy would not fit, or on a GPU, the check keeps the checkpoint's dtype
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=0))
    assert load_check.check_dtype(staged.path) == "auto"
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_check.check_dtype(staged.path) == "auto"


def test_load_check_dtype_counts_the_whole_process_tree(tmp_path, monkeypatch):
    """float32 only while the tree (this process and its children), one float32 copy and the files it is read from
    stay within 60 % of the memory the tree can use (what it holds plus what is available)."""
    import psutil

    (tmp_path / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    (tmp_path / "model.safetensors").write_bytes(bytes(1000))  # its float32 copy: 2000 bytes, read from 1000
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    child = SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=2000))
    parent = SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=1000), children=lambda recursive: [child])
    monkeypatch.setattr(psutil, "Process", lambda: parent)
    for available, expected in ((7100, "float32"), (6900, "auto"), (3400, "auto")):  # the bound: 7000
        monkeypatch.setattr(psutil, "virtual_memory", lambda available=available: SimpleNamespace(available=available))
        assert load_check.check_dtype(tmp_path) == expected, available


@pytest.mark.slow
def test_load_check_catches_remote_code_that_computes_differently(staged, tmp_path):
    copy = Path(shutil.copytree(staged.path, tmp_path / "tampered"))
    modeling = copy / "modeling_towervision.py"
    source = modeling.read_text()
    assert "logits = torch.tanh(logits / softcap) * softcap" in source
    modeling.write_text(
        source.replace(
            "logits = torch.tanh(logits / softcap) * softcap", "logits = torch.tanh(logits / softcap) * softcap * 1.01"
        )
    )
    result = load_check.run_load_check(copy)
    assert not result.passed
    assert any(problem.startswith("image: logits differ by up to") for problem in result.problems), result.problems
    assert "load check FAILED" in result.summary()


def _side_install_or_skip(install, what: str):
    try:
        return install(REPO_ROOT / ".cache")
    except RuntimeError as error:
        unreachable = (
            "Failed to establish", "Name or service not known", "Temporary failure in name resolution",
            "Network is unreachable", "No matching distribution", "Could not find a version", "timed out",
        )  # fmt: skip
        if any(text in str(error) for text in unreachable):
            pytest.skip(f"package registry unreachable, cannot install {what}")
        raise


def _install_oldest_or_skip() -> Path:
    return _side_install_or_skip(
        versions.install_min_transformers, f"transformers {versions.MIN_TRANSFORMERS_VERSION}"
    )


@pytest.mark.slow
def test_oldest_supported_transformers_loads_the_staged_checkpoint(staged, reference, locked_check):
    side = _install_oldest_or_skip()
    oldest = load_check.run_load_check(
        staged.path,
        reference=reference,
        extra_sys_path=[side],
        expected_transformers=versions.MIN_TRANSFORMERS_VERSION,
    )
    assert oldest.passed, oldest.summary()
    assert oldest.report["transformers_file"].startswith(str(side))
    for modality in ("image", "video"):
        newest_logits, oldest_logits = locked_check.remote[f"{modality}.logits"], oldest.remote[f"{modality}.logits"]
        assert (newest_logits - oldest_logits).abs().max().item() <= 1e-4
        assert torch.equal(locked_check.remote[f"{modality}.generated"], oldest.remote[f"{modality}.generated"])


@pytest.mark.slow
def test_newest_transformers_release_loads_the_staged_checkpoint(staged, reference, locked_check):
    """The remote code under the newest transformers on the package registry today, resolved afresh on every run:
    a new release that breaks published checkpoints fails CI the day it ships."""
    version, side = _side_install_or_skip(versions.install_newest_transformers, "the newest transformers release")
    if side is None:  # the locked version is the newest release: its check is `locked_check`
        newest = locked_check
    else:
        newest = load_check.run_load_check(
            staged.path, reference=reference, extra_sys_path=[side], expected_transformers=version
        )
    assert newest.passed, (
        f"transformers {version}, the newest release on the package registry, breaks the remote code "
        f"(installed here: {transformers.__version__}):\n{newest.summary()}"
    )
    assert newest.report["transformers_version"] == version
    for modality in ("image", "video"):
        assert torch.equal(locked_check.remote[f"{modality}.generated"], newest.remote[f"{modality}.generated"])


@pytest.mark.slow
@pytest.mark.parametrize("release", ["oldest", "newest"])
def test_parity_with_native_llava_classes_under_other_transformers(release):
    """tests/test_modeling.py's exact LlavaNext / LlavaOnevision parity tests (max |Δlogits| = 0.0), re-run under the
    oldest supported transformers and under the newest release of the day (this suite runs them under the lock)."""
    if release == "oldest":
        version, side = versions.MIN_TRANSFORMERS_VERSION, _install_oldest_or_skip()
    else:
        version, side = _side_install_or_skip(versions.install_newest_transformers, "the newest transformers release")
        if side is None:
            pytest.skip(f"the locked transformers {version} is the newest release: this suite's run covers it")
    env = {**os.environ, "PYTHONPATH": str(side)}
    command = [sys.executable, "-c", "import transformers; print(transformers.__version__)"]
    ran_under = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert ran_under == version
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-k", "matches"]
    result = subprocess.run(
        [*command, str(REPO_ROOT / "tests" / "test_modeling.py")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"parity with LlavaNext / LlavaOnevision breaks under transformers {version} ({release} release):\n"
        f"{result.stdout[-6000:]}"
    )


def test_declared_minimum_is_documented():
    assert versions.MIN_VERSION_SIDE_PACKAGES[0] == f"transformers=={versions.MIN_TRANSFORMERS_VERSION}"
    assert f"transformers>={versions.MIN_TRANSFORMERS_VERSION}" in (REPO_ROOT / "docs" / "publishing.md").read_text()


# ---- upload (fake HfApi at the seam) -------------------------------------------------------------------------------


class FakeHfApi:
    """Records the calls `towervision push` makes; the repo starts with `existing` files and visibility `private`."""

    def __init__(self, existing=(".gitattributes",), private=None):
        self.calls = []
        self.existing = list(existing)
        self.private = private  # None: the repo does not exist yet
        self.uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.private is None:
            self.private = kwargs.get("private", False)
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id, **kwargs):
        self.calls.append(("repo_info", repo_id, kwargs))
        return SimpleNamespace(private=self.private)

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", repo_id, kwargs))
        return list(self.existing)

    def create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        self.calls.append(("create_commit", repo_id, kwargs))
        self.operations = operations
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):
                self.uploaded[operation.path_in_repo] = hashlib.sha256(
                    Path(operation.path_or_fileobj).read_bytes()
                ).hexdigest()
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", pr_url=None)

    def names(self):
        return [call[0] for call in self.calls]


def _digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


@pytest.mark.slow
def test_push_stages_checks_and_uploads_in_one_commit(checkpoint, staged, eval_json, monkeypatch, tmp_path, capsys):
    _install_oldest_or_skip()
    monkeypatch.setattr(push, "DEFAULT_CACHE_DIR", REPO_ROOT / ".cache")  # the side install of the version test
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    existing = [
        ".gitattributes",
        "README.md",
        "Tower.png",
        "model-00001-of-00009.safetensors",
        "pytorch_model.bin",
        "old_helper.py",
    ]
    api = FakeHfApi(existing=existing, private=False)
    argv = [str(checkpoint), "--repo-id", REPO_ID, "--revision", "v1", "--create-pr", "--commit-message", "Republish"]
    argv += ["--max-shard-size", str(SHARD_LIMIT), "--eval-results", str(eval_json), "--check-oldest-transformers"]
    assert push.main(argv, api=api) == 0
    out = capsys.readouterr().out
    minimum = versions.MIN_TRANSFORMERS_VERSION
    assert f"load check passed under transformers {transformers.__version__}" in out
    assert f"load check passed under transformers {minimum}" in out

    assert api.names() == ["create_repo", "create_branch", "list_repo_files", "create_commit"]
    assert api.calls[0] == ("create_repo", REPO_ID, {"repo_type": "model", "private": False, "exist_ok": True})
    assert api.calls[1][2] == {"repo_type": "model", "branch": "v1", "exist_ok": True}
    assert api.calls[2][2] == {"repo_type": "model", "revision": "v1"}
    commit = api.calls[3][2]
    assert commit["commit_message"] == "Republish"
    assert commit["revision"] == "v1" and commit["create_pr"] is True
    assert commit["commit_description"].endswith(f"under transformers {transformers.__version__}, {minimum}.")
    deleted = {op.path_in_repo for op in api.operations if isinstance(op, CommitOperationDelete)}
    assert deleted == {"model-00001-of-00009.safetensors", "pytorch_model.bin", "old_helper.py"}
    # the uploaded files are exactly the staged folder (the fixture staged the same checkpoint the same way)
    assert api.uploaded == _digest(staged.path)
    assert not set(api.uploaded) & set(TRAINING_STATE + CREDENTIALS)
    assert "uploaded: https://huggingface.co/my-org/TowerVision-tiny-ft/commit/0" in out
    assert not list(tmp_path.glob("towervision-stage-*"))  # the temporary staging folder is removed


def test_upload_private_creates_a_private_repo(staged):
    api = FakeHfApi()
    push.upload_staged(api, staged, REPO_ID, private=True, commit_message="first")
    assert api.names() == ["create_repo", "repo_info", "list_repo_files", "create_commit"]
    assert api.calls[0][2]["private"] is True
    assert api.calls[3][2]["revision"] is None and api.calls[3][2]["create_pr"] is False
    assert {op.path_in_repo for op in api.operations} == set(staged.files)


def test_upload_private_refuses_an_existing_public_repo(staged):
    api = FakeHfApi(private=False)
    with pytest.raises(ValueError, match="already exists and is public"):
        push.upload_staged(api, staged, REPO_ID, private=True, commit_message="x")
    assert "create_commit" not in api.names()


def test_push_reports_a_refused_upload(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(load_check, "reference_outputs", lambda *args, **kwargs: {})
    passed = load_check.LoadCheckResult(report={"transformers_version": "5.23.0"})
    monkeypatch.setattr(load_check, "run_load_check", lambda *args, **kwargs: passed)
    api = FakeHfApi(private=False)
    assert push.main([str(checkpoint), "--repo-id", REPO_ID, "--private"], api=api) == 2
    assert "already exists and is public" in capsys.readouterr().err
    assert "create_commit" not in api.names()


def test_push_refuses_to_upload_what_fails_the_load_check(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(load_check, "reference_outputs", lambda *args, **kwargs: {})
    failed = load_check.LoadCheckResult(
        problems=["image: logits differ by up to 3"], report={"transformers_version": "5.23.0"}
    )
    monkeypatch.setattr(load_check, "run_load_check", lambda *args, **kwargs: failed)
    api = FakeHfApi()
    assert push.main([str(checkpoint), "--repo-id", REPO_ID], api=api) == 1
    assert api.calls == []
    assert "refusing to upload" in capsys.readouterr().err


@pytest.mark.parametrize("repo_id", ["acme/towervision--ft", "acme/x..y", "acme/-ft", "a/b/c", "acme/ft.git"])
def test_push_refuses_invalid_repo_ids_before_staging(checkpoint, tmp_path, capsys, repo_id):
    stage_dir = tmp_path / "stage"
    assert push.main([str(checkpoint), "--repo-id", repo_id, "--dry-run", "--stage-dir", str(stage_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("towervision push: invalid --repo-id: ") and repo_id in error
    assert not stage_dir.exists()


def test_push_reports_staging_errors(tmp_path, capsys):
    (tmp_path / "adapter_config.json").write_text("{}")
    assert push.main([str(tmp_path), "--repo-id", REPO_ID], api=FakeHfApi()) == 2
    assert "towervision merge" in capsys.readouterr().err


# ---- released checkpoints: `towervision convert` then `towervision push` -------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.slow
def test_converted_release_stages_and_passes_the_load_check(tmp_path):
    from towervision_hf.checkpoint.convert import convert_checkpoint

    convert_checkpoint(FIXTURES / "release_llava_next", tmp_path / "converted")
    staged = stage_checkpoint(
        tmp_path / "converted",
        tmp_path / "staged",
        repo_id="my-org/TowerVision-2B-remote",
        base_models=["utter-project/TowerVision-2B"],
    )
    assert CODE_FILES <= set(staged.files) and "model.safetensors" in staged.files
    assert ModelCard.load(staged.path / "README.md").data.base_model == ["utter-project/TowerVision-2B"]
    result = load_check.run_load_check(staged.path)
    assert result.passed, result.summary()
    assert set(result.max_logit_diff) == {"image"}  # image-only release: no video token


@pytest.mark.slow
def test_push_dry_run_of_a_converted_towervideo_through_the_cli(tmp_path, capsys):
    from towervision_hf.cli import main as cli_main

    assert cli_main(["convert", str(FIXTURES / "release_llava_onevision"), str(tmp_path / "converted")]) == 0
    stage_dir = tmp_path / "dry"
    argv = ["push", str(tmp_path / "converted"), "--repo-id", "my-org/TowerVideo-2B-remote", "--dry-run"]
    argv += [
        "--stage-dir",
        str(stage_dir),
        "--pipeline-tag",
        "video-text-to-text",
        "--base-model",
        "utter-project/TowerVideo-2B",
    ]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert f"dry run: nothing uploaded; the staged folder is {stage_dir}" in out
    assert re.search(r"model\.safetensors\s+\d+\.\d KiB", out)
    summary = r"load check passed under transformers \S+ in \d+ s \(float32 on cpu; image: .*, video: .*\)"
    assert re.search(summary, out)
    assert re.search(r"load check: \d+ s in all", out)
    card = ModelCard.load(stage_dir / "README.md")
    assert card.data.pipeline_tag == "video-text-to-text" and card.data.base_model == ["utter-project/TowerVideo-2B"]
    assert '{"type": "video", "path": "clip.mp4"}' in card.text
    assert sorted(path.name for path in stage_dir.iterdir()) == sorted(
        ["README.md", "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
         "processor_config.json", "tokenizer.json", "tokenizer_config.json", *CODE_FILES]
    )  # fmt: skip


# ---- what the card publishes, upload failures -----------------------------------------------------------------------


def test_model_card_publishes_metrics_only_and_no_local_paths(tiny_config, tmp_path):
    local = str(tmp_path / "my-disk" / "commute")
    commute = {
        "task": "commute",
        "data": {"source": local, "kind": "directory", "revision": None},
        "settings": {},
        "skipped": {"missing_image": 2},
        "tables": {"language pair": {"en-de": {"accuracy": 0.75, "accuracy_sum": 0.5, "ties": 1, "n": 12}}},
        "notes": [],
    }
    alm = {
        "task": "alm-bench",
        "data": {"source": "MBZUAI/ALM-Bench", "kind": "hub", "revision": "main"},
        "settings": {"split": "test", "plot": str(tmp_path / "alm.png")},
        "tables": {
            "language": {
                "German": {"score": 0.5, "mcq_accuracy": None, "n": 4, "n_scored": 3, "empty_outputs": 0, "skipped": 1}
            }
        },
    }
    card = render_model_card(
        tiny_config, repo_id=REPO_ID, num_parameters=10, dtypes=["F32"], evaluations=[commute, alm]
    )
    metrics = {(r.dataset_name, r.metric_type, r.metric_value) for r in ModelCard(card).data.eval_results}
    assert metrics == {("commute", "accuracy", 0.75), ("commute", "accuracy_sum", 0.5), ("alm-bench", "score", 0.5)}
    assert str(tmp_path) not in card and "alm.png" not in card
    assert "Data: local data; 2 items skipped." in card
    assert "Data: [MBZUAI/ALM-Bench](https://huggingface.co/datasets/MBZUAI/ALM-Bench) (revision `main`)" in card
    assert "| en-de | 0.75 | 0.5 | 1 | 12 |" in card  # the counts stay in the card's table


class FailingHfApi(FakeHfApi):
    def create_commit(self, repo_id, operations, **kwargs):
        raise ConnectionError("[Errno 111] Connection refused\nwhile uploading 9 files")


def test_push_upload_failure_is_one_line_exit_3_and_removes_the_stage_folder(
    checkpoint, monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(load_check, "reference_outputs", lambda *args, **kwargs: {})
    passed = load_check.LoadCheckResult(report={"transformers_version": "5.23.0"})
    monkeypatch.setattr(load_check, "run_load_check", lambda *args, **kwargs: passed)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert push.main([str(checkpoint), "--repo-id", REPO_ID, "--create-pr"], api=FailingHfApi()) == 3
    err = capsys.readouterr().err
    assert err == f"towervision push: upload to {REPO_ID} failed: ConnectionError: [Errno 111] Connection refused\n"
    assert not list(tmp_path.glob("towervision-stage-*"))
