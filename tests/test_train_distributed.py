"""Scale-out and resumption on CPU: the tiny recipe with 2 processes (gloo) through `accelerate launch`, under DDP and
under FSDP2 (`--fsdp2 true`: sharded parameters, asserted; the same losses and weights as DDP), and a run stopped at a
checkpoint and resumed ending with the same weights as an uninterrupted one."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, TrainerCallback

import towervision_hf
from towervision_hf import train
from towervision_hf.checkpoint.compose import build_tiny


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_write_one_consistent_checkpoint(tmp_path):
    output_dir = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(towervision_hf.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "recipes/accelerate/cpu_ddp.yaml"),
        "--main_process_port",
        str(free_port()),
        "-m",
        "towervision_hf.train",
        str(ROOT / "recipes/tiny/stage2_vision.yaml"),
        "--model_name_or_path",
        "tiny",
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "2",
        "--max_length",
        "512",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--disable_tqdm",
        "true",
    ]
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    # the recipe packs the 32 rows of the sample; 2 processes x 4 packed rows per step: each took its own share
    packs = len(train.build_trainer(*train.parse_args(command[command.index("-m", 4) + 2 :])).train_dataset)
    assert state["log_history"][-1]["epoch"] == pytest.approx(2 / math.ceil(packs / (2 * 4)))
    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["packing"]["rows"] == 2 * 2 * 4 and summary["packing"]["samples"] > 2 * 2 * 4
    final = load_file(output_dir / "model.safetensors")
    checkpoint = load_file(output_dir / "checkpoint-2" / "model.safetensors")
    assert final.keys() == checkpoint.keys() and all(torch.equal(final[k], checkpoint[k]) for k in final)
    assert json.loads((output_dir / "train_summary.json").read_text())["global_step"] == 2
    assert result.stdout.count("saved to") == 1  # written once, by the main process


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The tiny model as a checkpoint folder: FSDP2 and QLoRA load the model, the in-memory `tiny` is refused."""
    folder = tmp_path_factory.mktemp("tiny")
    model, processor = build_tiny(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def launch(config_file: str, checkpoint: Path, output_dir: Path, *extra: str) -> tuple[list, dict, dict]:
    """The packed tiny recipe on 2 CPU processes for 2 steps (`accelerate launch` with `config_file`): the logged
    losses and gradient norms, the final weights and `train_summary.json`."""
    env = {**os.environ, "PYTHONPATH": str(Path(towervision_hf.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "recipes/accelerate" / config_file), "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "towervision_hf.train",
        str(ROOT / "recipes/tiny/stage2_vision.yaml"),
        "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir), "--use_cpu", "true",
        "--max_steps", "2", "--max_length", "512", "--per_device_train_batch_size", "2", "--logging_steps", "1",
        "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none", "--disable_tqdm", "true", *extra,
    ]  # fmt: skip
    # DeepSpeed compiles its CPU communication op on first use (about a minute and a half on 2 cores)
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert all(entry["samples_per_row"] > 1 for entry in history if "loss" in entry)  # packed steps
    logged = [value for entry in history if "loss" in entry for value in (entry["loss"], entry["grad_norm"])]
    assert len(logged) == 2 * 2  # loss and gradient norm of two steps
    summary = json.loads((output_dir / "train_summary.json").read_text())
    return logged, load_file(output_dir / "model.safetensors"), summary


@pytest.fixture(scope="module")
def ddp_run(tiny_checkpoint, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    return (*launch("cpu_ddp.yaml", tiny_checkpoint, output_dir, "--save_only_model", "true"), output_dir)


def assert_same_training(logged, weights, ddp_logged, ddp_weights):
    assert logged == pytest.approx(ddp_logged, rel=1e-5)
    assert weights.keys() == ddp_weights.keys()
    for name, weight in weights.items():
        torch.testing.assert_close(weight, ddp_weights[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.slow
def test_packed_fsdp2_run_shards_and_matches_the_ddp_run(tmp_path, tiny_checkpoint, ddp_run):
    """`towervision train --fsdp2 true` launched on 2 CPU processes (gloo) with recipes/accelerate/cpu_ddp.yaml, on
    the packed tiny recipe: every parameter is a DTensor of which the main process holds half, in FSDP2 units per
    SigLIP encoder layer and Gemma2 decoder layer; the losses, gradient norms and final weights (with activation
    checkpointing, as the 9B recipes) are the DDP run's (text-only batches get a masked blank image under FSDP2, so
    every rank runs the tower), and the final checkpoint ships the model's own code and loads."""
    ddp_logged, ddp_weights, ddp_summary, ddp_dir = ddp_run
    output_dir = tmp_path / "fsdp2"
    logged, weights, summary = launch(
        "cpu_ddp.yaml", tiny_checkpoint, output_dir, "--save_only_model", "true", "--fsdp2", "true",
        "--activation_checkpointing", "true",  # as the 9B recipes
    )  # fmt: skip
    assert "fsdp2" not in ddp_summary
    sharding = summary["fsdp2"]
    assert sharding["processes"] == 2 and sharding["sharded_parameters"] == sharding["parameters"] == len(ddp_weights)
    assert sharding["local_elements"] == pytest.approx(sharding["elements"] / 2, rel=0.02)
    assert sharding["units"] == {
        "TowerVisionForConditionalGeneration": 1, "SiglipEncoderLayer": 2, "Gemma2DecoderLayer": 2, "Gemma2RMSNorm": 1,
        "Gemma2TextScaledWordEmbedding": 1,  # a unit of its own under the model's `_fsdp_plan` (Gemma2's)
    }  # fmt: skip
    # the gathered full state dict also holds the LM head, tied to (and equal to) the embeddings
    assert weights.keys() - ddp_weights.keys() == {"lm_head.weight"}
    assert torch.equal(weights.pop("lm_head.weight"), weights["model.language_model.embed_tokens.weight"])
    assert_same_training(logged, weights, ddp_logged, ddp_weights)
    for folder in (output_dir, output_dir / "checkpoint-2"):
        assert (folder / "modeling_towervision.py").is_file() and not list(folder.glob("_fsdp*.py"))
        assert json.loads((folder / "config.json").read_text()) == json.loads((ddp_dir / "config.json").read_text())
    model = AutoModelForImageTextToText.from_pretrained(output_dir, trust_remote_code=True)
    assert type(model).__name__ == "TowerVisionForConditionalGeneration"
    torch.testing.assert_close(model.lm_head.weight, ddp_weights["model.language_model.embed_tokens.weight"])


@pytest.mark.slow
def test_packed_zero3_run_partitions_and_matches_the_ddp_run(tmp_path, tiny_checkpoint, ddp_run):
    """recipes/accelerate/deepspeed_zero3.yaml on 2 CPU processes (DeepSpeed's CPU accelerator): every parameter is
    partitioned (a `ds_id`, half of its elements on the main process), and the losses, gradient norms and final
    weights (with activation checkpointing), saved under the model's own tensor names, are the DDP run's."""
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
    ddp_logged, ddp_weights, _, _ = ddp_run
    logged, weights, summary = launch(
        "deepspeed_zero3.yaml", tiny_checkpoint, tmp_path / "zero3", "--activation_checkpointing", "true"
    )
    partitioning = summary["zero3"]
    assert partitioning["processes"] == 2
    assert partitioning["partitioned_parameters"] == partitioning["parameters"] == len(ddp_weights)
    assert partitioning["local_elements"] == pytest.approx(partitioning["elements"] / 2, rel=0.02)
    assert_same_training(logged, weights, ddp_logged, ddp_weights)


def test_fsdp2_refuses_what_it_cannot_shard(tiny_checkpoint, tmp_path):
    """One process (nothing to shard over), the in-memory tiny model, LoRA, trained-tensors-only saves."""
    base = ["tiny/stage2_vision.yaml", "--output_dir", str(tmp_path), "--fsdp2", "true"]
    cases = {
        "launch 2 or more": ["--model_name_or_path", str(tiny_checkpoint)],
        "need a checkpoint folder": ["--model_name_or_path", "tiny"],
        "fsdp2 with use_peft": ["--model_name_or_path", str(tiny_checkpoint), "--use_peft", "true"],
        "save_trained_only reads": ["--model_name_or_path", str(tiny_checkpoint), "--save_trained_only", "true"],
    }
    for message, extra in cases.items():
        with pytest.raises(ValueError, match=message):
            train.build_trainer(*train.parse_args([*base, *extra]))


class StopAt(TrainerCallback):
    """Stops training right after the checkpoint of step `step` is written, like a killed job."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    common = [
        "tiny/stage2_vision.yaml",
        "--model_name_or_path",
        "tiny",
        "--max_steps",
        "5",
        "--per_device_train_batch_size",
        "8",
        "--lr_scheduler_type",
        "cosine",
        "--warmup_steps",
        "2",
        "--disable_tqdm",
        "true",
    ]  # packed: 32 rows in about 11 packs, 2 steps per epoch

    def trainer_for(output_dir, *extra):
        return train.build_trainer(*train.parse_args([*common, "--output_dir", str(tmp_path / output_dir), *extra]))

    uninterrupted = trainer_for("full")
    uninterrupted.train()

    interrupted = trainer_for("resumed", "--save_strategy", "steps", "--save_steps", "3")
    interrupted.add_callback(StopAt(3))
    interrupted.train()
    assert interrupted.state.global_step == 3

    resumed = trainer_for(
        "resumed", "--save_strategy", "steps", "--save_steps", "3", "--resume_from_checkpoint", "last"
    )
    resumed.train(resume_from_checkpoint=train.resolve_resume(resumed.args))
    assert resumed.state.global_step == 5
    expected = dict(uninterrupted.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.allclose(param, expected[name], rtol=0, atol=1e-6), name
