"""`--save_trained_only`: a stage saves only the tensors it trained beside a reference to its base, and
`towervision merge` composes them back into the checkpoint the run would have saved in full."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import stage_args
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from towervision_cli import main as cli_main
from towervision_hf import train
from towervision_hf.checkpoint import cli as checkpoint_cli
from towervision_hf.checkpoint.cli import init_main
from towervision_hf.checkpoint.trained_modules import merge_trained_modules, save_trained_modules


PROJECTOR = {f"model.multi_modal_projector.linear_{i}.{kind}" for i in (1, 2) for kind in ("weight", "bias")}


def stage1_argv(output_dir, *extra):
    no_cache = ("--vision_feature_cache", "")
    return stage_args("stage1_projector", output_dir, *no_cache, "--save_trained_only", "true", *extra)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A local tiny stage-0 base, a 2-step stage 1 from it saved with `--save_trained_only` (and a checkpoint-2), and
    the same run saved in full: `(base, trained, full)` folders."""
    root = tmp_path_factory.mktemp("trained_modules")
    base, trained, full = root / "base", root / "trained", root / "full"
    assert init_main(["--tiny", str(base)]) == 0
    extra = ("--model_name_or_path", str(base), "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2")
    trainer = train.run(stage1_argv(trained, *extra))
    trainer.save_model(str(full))
    return base, trained, full


def test_stage1_saves_only_the_projector_beside_its_base(stage1):
    base, trained, full = stage1
    files = set(os.listdir(trained))
    assert {"trained_modules.safetensors", "trained_modules.json", "config.json", "generation_config.json"} <= files
    assert {"modeling_towervision.py", "processor_config.json", "train_summary.json"} <= files
    assert not any(name.startswith("model") and name.endswith((".safetensors", ".json")) for name in files)
    tensors = load_file(trained / "trained_modules.safetensors")
    assert set(tensors) == PROJECTOR  # square layout: the image newline stays frozen, so it is not saved
    payload = sum(tensor.nbytes for tensor in tensors.values())
    assert payload < os.path.getsize(trained / "trained_modules.safetensors") < payload + 1024
    assert os.path.getsize(trained / "trained_modules.safetensors") * 5 < os.path.getsize(full / "model.safetensors")
    index = json.loads((trained / "trained_modules.json").read_text())
    assert index["base"] == {"model_name_or_path": str(base.resolve())}
    assert set(index["trained"]) | set(index["frozen"]) == set(load_file(full / "model.safetensors"))
    checkpoint = load_file(trained / "checkpoint-2" / "model.safetensors")  # checkpoints stay full, for resuming
    assert all(torch.equal(tensor, checkpoint[name]) for name, tensor in load_file(full / "model.safetensors").items())
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["trainable_parameters"]["projector"] == sum(tensor.numel() for tensor in tensors.values())


def test_merge_gives_the_full_save_tensor_by_tensor(stage1, tmp_path, capsys):
    _, trained, full = stage1
    merged = tmp_path / "merged"
    assert cli_main(["merge", str(trained), str(merged)]) == 0
    assert "merged" in capsys.readouterr().out
    merged_tensors, full_tensors = load_file(merged / "model.safetensors"), load_file(full / "model.safetensors")
    assert set(merged_tensors) == set(full_tensors)
    for name, tensor in full_tensors.items():
        assert torch.equal(merged_tensors[name], tensor) and merged_tensors[name].dtype == tensor.dtype, name
    assert json.loads((merged / "config.json").read_text()) == json.loads((full / "config.json").read_text())
    assert not (merged / "trained_modules.json").exists() and not (merged / "checkpoint-2").exists()
    assert merged.stat().st_mode & 0o777 == full.stat().st_mode & 0o777  # not the temporary folder's 0o700

    processor = AutoProcessor.from_pretrained(merged, trust_remote_code=True)
    inputs = processor(images=[Image.new("RGB", (40, 30), "teal")], text=["<image> a caption"], return_tensors="pt")
    with torch.no_grad():
        logits = [
            AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()(**inputs).logits
            for folder in (merged, full)
        ]
    assert torch.equal(*logits)


def test_anyres_stage1_on_tiny_saves_the_newline_and_merges_from_the_seed(tmp_path):
    trained, merged = tmp_path / "trained", tmp_path / "merged"
    extra = ("--model_name_or_path", "tiny", "--max_steps", "1", "--image_aspect_ratio", "anyres", "--max_tiles", "1")
    trainer = train.run(stage1_argv(trained, *extra))
    assert set(load_file(trained / "trained_modules.safetensors")) == PROJECTOR | {"model.image_newline"}
    index = json.loads((trained / "trained_modules.json").read_text())
    assert index["base"] == {"model_name_or_path": "tiny", "seed": 0}  # rebuilt from the seed by `merge`
    assert checkpoint_cli.merge_main([str(trained), str(merged)]) == 0
    expected = trainer.model.state_dict()
    expected.pop("lm_head.weight")  # tied to the embeddings
    merged_tensors = load_file(merged / "model.safetensors")
    assert set(merged_tensors) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(merged_tensors[name], tensor), name
    # a full save into the same folder later replaces the trained modules: the folder is a model again
    train.run(stage1_argv(trained, *extra, "--save_trained_only", "false"))
    assert (trained / "model.safetensors").is_file() and not list(trained.glob("trained_modules.*"))


def test_trained_only_save_replaces_an_earlier_full_save(tmp_path):
    from towervision_hf.checkpoint.compose import build_tiny

    stage, base, merged = tmp_path / "stage", tmp_path / "base", tmp_path / "merged"
    model, processor = build_tiny(seed=3)
    model.save_pretrained(stage, max_shard_size="20KB")  # an earlier full save, in shards, in the same folder
    assert len(list(stage.glob("model-*-of-*.safetensors"))) > 1
    for name, param in model.named_parameters():
        param.requires_grad_(name in PROJECTOR)
    saved = save_trained_modules(model, processor, stage, {"model_name_or_path": "tiny", "seed": 3})
    assert set(saved) == PROJECTOR
    assert not list(stage.glob("model*.safetensors*"))
    build_tiny(seed=3)[0].save_pretrained(base)
    merge_trained_modules(stage, base, merged)
    assert sorted(path.name for path in merged.glob("model*.safetensors*")) == ["model.safetensors"]


def test_save_trained_only_is_refused_with_lora_and_the_folder_is_not_a_model(stage1, tmp_path):
    from towervision_hf.hub.stage import read_checkpoint_config

    _, trained, _ = stage1
    with pytest.raises(ValueError, match="LoRA run"):
        train.build_trainer(*train.parse_args(stage1_argv(tmp_path, "--use_peft", "true")))
    with pytest.raises(ValueError, match="is the input"):
        train.build_trainer(*train.parse_args(stage1_argv(tmp_path, "--model_name_or_path", str(tmp_path))))
    _, training_args, model_args = train.parse_args(stage1_argv(tmp_path, "--model_name_or_path", str(trained)))
    with pytest.raises(ValueError, match=f"towervision merge {trained} OUT"):
        train.load_model_and_processor(model_args, training_args)
    with pytest.raises(ValueError, match="merge it first with `towervision merge`"):
        read_checkpoint_config(trained)


def rewrite_base(base: Path, folder: Path, change) -> Path:
    """A copy of the base folder whose tensors went through `change(tensors)`."""
    shutil.copytree(base, folder)
    tensors = load_file(base / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


FROZEN = "model.vision_tower.post_layernorm.weight"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t[FROZEN].add_(1e-3), f"tensor {FROZEN} in .*model.safetensors differs from the one the stage"),
        (lambda t: t.update({FROZEN: t[FROZEN][:-1]}), rf"tensor {FROZEN} has shape \[31\] in .*model.safetensors"),
        (lambda t: t.pop(FROZEN), rf"lacks 1 tensor\(s\) the stage was trained with, e.g. \['{FROZEN}'\]"),
        (lambda t: t.update(extra=torch.zeros(1)), r"holds 1 tensor\(s\) the stage's model had not, e.g. \['extra'\]"),
    ],
    ids=["other-values", "other-shape", "missing-tensor", "extra-tensor"],
)
def test_merge_refuses_a_base_that_is_not_the_stages(stage1, tmp_path, change, message):
    base, trained, _ = stage1
    other = rewrite_base(base, tmp_path / "other", change)
    with pytest.raises(ValueError, match=message):
        merge_trained_modules(trained, other, tmp_path / "merged")
    assert sorted(os.listdir(tmp_path)) == ["other"]  # nothing half-written is left behind


def test_merge_command_errors_name_the_file(stage1, tmp_path, capsys):
    _, trained, _ = stage1
    moved = tmp_path / "moved"
    shutil.copytree(trained, moved)
    index = json.loads((moved / "trained_modules.json").read_text())
    index["base"]["model_name_or_path"] = str(tmp_path / "gone")
    (moved / "trained_modules.json").write_text(json.dumps(index))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    cases = [
        (
            [moved, tmp_path / "out"],
            f"{tmp_path / 'gone'}: no such folder (the base named by {moved / 'trained_modules.json'}",
        ),
        (
            [moved, tmp_path / "out", "--base", "my-org/absent"],
            "my-org/absent is not a local folder and cannot be fetched from the Hub",
        ),
        ([trained, tmp_path / "taken"], "already exists and is not an empty folder"),
        ([trained, tmp_path / "out", "--dtype", "bfloat16"], "in the dtype their run trained in"),
    ]
    for argv, message in cases:
        assert cli_main(["merge", *map(str, argv)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("towervision merge: error: ") and message in error, error
    assert not (tmp_path / "out").exists()
    (moved / "trained_modules.safetensors").unlink()
    with pytest.raises(ValueError, match=f"{moved / 'trained_modules.safetensors'} is missing"):
        merge_trained_modules(moved, tmp_path / "gone", tmp_path / "out")
