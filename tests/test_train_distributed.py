"""Scale-out and resumption on CPU: the tiny recipe with 2 processes (gloo) through `accelerate launch`, under DDP and
under FSDP2 (the same losses and weights), and a run stopped at a checkpoint and resumed ending with the same weights
as an uninterrupted one."""

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
from transformers import TrainerCallback

import towervision_hf
from towervision_hf import train

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


@pytest.mark.slow
def test_packed_fsdp2_run_matches_the_ddp_run(tmp_path):
    """recipes/accelerate/fsdp2.yaml (2 CPU processes, fp32) on the packed tiny recipe: the losses, gradient norms
    and final weights of the DDP run, blank-image rows (every FSDP rank runs the tower) included."""
    env = {**os.environ, "PYTHONPATH": str(Path(towervision_hf.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    runs = {}
    for config in ("cpu_ddp", "fsdp2"):
        output_dir = tmp_path / config
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / f"recipes/accelerate/{config}.yaml"), "--num_processes", "2", "--mixed_precision", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "towervision_hf.train",
            str(ROOT / "recipes/tiny/stage2_vision.yaml"),
            "--model_name_or_path", "tiny", "--output_dir", str(output_dir), "--use_cpu", "true", "--max_steps", "2",
            "--max_length", "512", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy",
            "steps", "--save_steps", "2", "--report_to", "none", "--disable_tqdm", "true",
        ]  # fmt: skip
        result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        history = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        logged = [value for entry in history if "loss" in entry for value in (entry["loss"], entry["grad_norm"])]
        assert all(entry["samples_per_row"] > 1 for entry in history if "loss" in entry)  # packed steps
        runs[config] = logged, load_file(output_dir / "model.safetensors")
    (ddp_logged, ddp_weights), (fsdp_logged, fsdp_weights) = runs["cpu_ddp"], runs["fsdp2"]
    assert len(ddp_logged) == 2 * 2  # loss and gradient norm of two steps
    assert fsdp_logged == pytest.approx(ddp_logged, rel=1e-5)
    assert fsdp_weights.keys() == ddp_weights.keys()
    for name, weight in fsdp_weights.items():
        torch.testing.assert_close(weight, ddp_weights[name], rtol=1e-5, atol=1e-6, msg=name)


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
