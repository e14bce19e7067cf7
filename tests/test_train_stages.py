"""Training stages on the tiny recipes: freezing and per-module learning rates, the stage-1 feature cache, LoRA with
the image newline, merging, and the checkpoint's own remote code. Everything runs on CPU in-process."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import stage_args
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from towervision_hf import train
from towervision_hf.checkpoint import cli as checkpoint_cli
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator, module_group
from towervision_hf.training.feature_cache import vision_tower_identity
from towervision_hf.training.model_loading import qlora_quantization_config


def build(*argv):
    return train.build_trainer(*train.parse_args(argv))


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    """A saved tiny stage-1 model (one step), the starting point of the later stages."""
    output_dir = tmp_path_factory.mktemp("stage1")
    train.run(stage_args("stage1_projector", output_dir, "--max_steps", "1", "--vision_feature_cache", ""))
    return str(output_dir)


def test_stage1_changes_only_the_projector(tmp_path):
    trainer = build(*stage_args("stage1_projector", tmp_path, "--max_steps", "2", "--vision_feature_cache", ""))
    assert trainer.model.config.image_aspect_ratio == "square"  # one tile per image: the newline is never used
    assert not trainer.model.model.image_newline.requires_grad
    before = snapshot(trainer.model)
    trainer.train()
    changed = {name for name, value in snapshot(trainer.model).items() if not torch.equal(value, before[name])}
    assert changed == {name for name in before if module_group(name) == "projector"} - {"model.image_newline"}


def test_anyres_stage1_trains_the_newline_too(tmp_path):
    extra = ("--max_steps", "2", "--vision_feature_cache", "", "--image_aspect_ratio", "anyres", "--max_tiles", "1")
    trainer = build(*stage_args("stage1_projector", tmp_path, *extra))
    before = snapshot(trainer.model)
    trainer.train()
    changed = {name for name, value in snapshot(trainer.model).items() if not torch.equal(value, before[name])}
    assert changed == {name for name in before if module_group(name) == "projector"}


def test_module_learning_rates_become_optimizer_groups(stage1_checkpoint, tmp_path):
    trainer = build(
        *stage_args(
            "stage2_vision",
            tmp_path,
            "--model_name_or_path",
            stage1_checkpoint,
            "--language_lr",
            "0",
            "--weight_decay",
            "0.1",
        )
    )
    groups = {group["name"]: group for group in trainer.create_optimizer().param_groups}
    assert set(groups) == {"projector", "projector_no_decay", "vision", "vision_no_decay"}
    assert groups["vision"]["lr"] == 1e-3 and groups["projector"]["lr"] == trainer.args.learning_rate == 5e-3
    assert groups["vision"]["weight_decay"] == 0.1 and groups["vision_no_decay"]["weight_decay"] == 0.0
    names = {id(param): name for name, param in trainer.model.named_parameters()}
    for name, group in groups.items():
        assert {module_group(names[id(param)]) for param in group["params"]} == {name.removesuffix("_no_decay")}
    assert not any(
        param.requires_grad for name, param in trainer.model.named_parameters() if module_group(name) == "language"
    )


def test_feature_cache_gives_the_same_losses(tmp_path):
    runs = {}
    for name, cache in (("plain", ""), ("cached", str(tmp_path / "cache"))):
        # 12 images, 4 per step: steps 4-6 see every image a second time
        trainer = build(
            *stage_args("stage1_projector", tmp_path / name, "--max_steps", "6", "--vision_feature_cache", cache)
        )
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs[name] = (losses, trainer.model.model.multi_modal_projector.linear_1.weight.detach().clone(), trainer)
    (plain_losses, plain_weight, _), (cached_losses, cached_weight, trainer) = runs["plain"], runs["cached"]
    assert cached_losses == pytest.approx(plain_losses, rel=1e-6)
    assert torch.allclose(cached_weight, plain_weight, rtol=0, atol=1e-6)
    cache = trainer.feature_cache
    assert cache.misses > 0 and cache.hits >= cache.misses  # the second epoch only reads
    assert len(list(cache.folder.glob("*/*.safetensors"))) == cache.misses


def test_feature_cache_is_keyed_by_the_tower_and_needs_it_frozen(tmp_path):
    trainer = build(*stage_args("stage1_projector", tmp_path, "--vision_feature_cache", ""))
    tower = trainer.model.model.vision_tower
    identity = vision_tower_identity(tower, [-1])
    assert vision_tower_identity(tower, [-2]) != identity
    with torch.no_grad():
        tower.post_layernorm.bias.add_(1e-3)
    assert vision_tower_identity(tower, [-1]) != identity
    with pytest.raises(ValueError, match="needs a frozen vision tower"):
        build(
            *stage_args(
                "stage1_projector", tmp_path, "--vision_lr", "1e-4", "--vision_feature_cache", str(tmp_path / "c")
            )
        )


def test_lora_trains_lm_adapters_projector_and_newline_and_merges(stage1_checkpoint, tmp_path):
    adapter_dir, merged_dir = tmp_path / "lora", tmp_path / "merged"
    trainer = build(
        *stage_args(
            "stage2_vision",
            adapter_dir,
            "--model_name_or_path",
            stage1_checkpoint,
            "--max_steps",
            "2",
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--vision_lr",
            "0",
        )
    )
    peft_model = trainer.model
    newline_before = peft_model.get_base_model().model.image_newline.detach().clone()
    trainer.train()
    trainer.save_model(str(adapter_dir))

    lora_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}
    assert lora_modules and all(".language_model." in name for name in lora_modules)
    assert any(
        "multi_modal_projector.modules_to_save" in n for n, p in peft_model.named_parameters() if p.requires_grad
    )
    newline = peft_model.get_base_model().model.image_newline.detach()
    saved_newline = load_file(adapter_dir / "image_newline.safetensors")["image_newline"]
    assert torch.equal(saved_newline, newline) and not torch.equal(newline, newline_before)

    assert checkpoint_cli.merge_main([str(adapter_dir), str(merged_dir)]) == 0
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
    assert torch.equal(merged.model.image_newline, newline)
    assert merged.config.max_tiles == 6  # the stage's config, not the stage-1 base's
    assert "AutoModelForImageTextToText" in json.loads((merged_dir / "config.json").read_text())["auto_map"]
    assert (merged_dir / "modeling_towervision.py").is_file() and (merged_dir / "processor_config.json").is_file()
    rows = trainer.train_dataset[0]["packed_rows"]  # the tiny stage-2 recipe packs its rows
    batch = TowerVisionCollator(trainer.processing_class)(rows)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", SKIPPED_KEY)}
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model.get_base_model()(**inputs).logits
        assert torch.allclose(merged(**inputs).logits, expected, atol=1e-5)


def test_newline_is_restored_when_resuming_a_lora_run(stage1_checkpoint, tmp_path):
    from towervision_hf.checkpoint.image_newline import restore_image_newline

    trainer = build(
        *stage_args(
            "stage2_vision",
            tmp_path,
            "--model_name_or_path",
            stage1_checkpoint,
            "--max_steps",
            "1",
            "--use_peft",
            "true",
            "--vision_lr",
            "0",
        )
    )
    trainer.train()
    trainer.save_model(str(tmp_path))
    fresh = build(
        *stage_args(
            "stage2_vision",
            tmp_path / "fresh",
            "--model_name_or_path",
            stage1_checkpoint,
            "--use_peft",
            "true",
            "--vision_lr",
            "0",
        )
    )
    assert restore_image_newline(fresh.model, tmp_path)
    assert torch.equal(
        fresh.model.get_base_model().model.image_newline, trainer.model.get_base_model().model.image_newline
    )


def test_checkpoint_remote_code_path(stage1_checkpoint, tmp_path):
    trainer = build(
        *stage_args(
            "stage2_vision",
            tmp_path,
            "--model_name_or_path",
            stage1_checkpoint,
            "--max_steps",
            "1",
            "--model_code",
            "checkpoint",
            "--trust_remote_code",
            "true",
        )
    )
    assert type(trainer.model).__module__.startswith("transformers_modules.")
    trainer.train()
    with pytest.raises(ValueError, match="trust_remote_code"):
        build(
            *stage_args(
                "stage2_vision", tmp_path, "--model_name_or_path", stage1_checkpoint, "--model_code", "checkpoint"
            )
        )


def test_stages_chain_through_saved_checkpoints_with_their_image_layout(stage1_checkpoint, tmp_path):
    files = set(os.listdir(stage1_checkpoint))
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "chat_template.jinja",
        "modeling_towervision.py",
        "processing_towervision.py",
        "train_summary.json",
    } <= files
    summary = json.loads((Path(stage1_checkpoint) / "train_summary.json").read_text())
    assert summary["global_step"] == 1 and summary["trainable_parameters"]["language"] == 0
    # stage 1 saves a one-tile-per-image model and processor (7x7 = 49 tokens, no thumbnail, no newline); stage 2
    # switches both back to anyres with 6 tiles
    processor = AutoProcessor.from_pretrained(stage1_checkpoint)
    config = json.loads((Path(stage1_checkpoint) / "config.json").read_text())
    assert config["image_aspect_ratio"] == processor.image_processor.image_aspect_ratio == "square"
    inputs = processor(images=[Image.new("RGB", (300, 100))], text=["<image> caption"], return_tensors="pt")
    assert inputs["pixel_values"].shape[1] == 1 and inputs["input_ids"].eq(processor.image_token_id).sum() == 49
    stage2 = build(*stage_args("stage2_vision", tmp_path, "--model_name_or_path", stage1_checkpoint))
    assert stage2.model.config.image_aspect_ratio == stage2.processing_class.image_processor.image_aspect_ratio
    assert stage2.model.config.image_aspect_ratio == "anyres"
    assert stage2.model.config.max_tiles == stage2.processing_class.image_processor.max_tiles == 6
    assert stage2.model.config.image_grid_pinpoints == stage2.processing_class.image_processor.image_grid_pinpoints
    assert len(stage2.model.config.image_grid_pinpoints) == 14


def test_streamed_data_recipe_sets_the_steps_of_one_epoch(tmp_path):
    recipe = str(Path(__file__).resolve().parents[1] / "recipes/data/sample.yaml")
    trainer = build(
        *stage_args(
            "stage2_vision",
            tmp_path,
            "--model_name_or_path",
            "tiny",
            "--dataset",
            recipe,
            "--dataset_stage",
            "vision",
            "--max_steps",
            "-1",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "8",
        )
    )
    # 32 rows of the recipe's vision stage, packed by the tiny stage-2 recipe: 8 packed rows per step
    packs = list(trainer.train_dataset)
    assert sum(len(pack["packed_rows"]) for pack in packs) == 32 and len(packs) < 32
    assert trainer.args.max_steps == math.ceil(len(packs) / 8)
    assert trainer.args.accelerator_config.dispatch_batches is False
    trainer.train()
    assert trainer.state.global_step == trainer.args.max_steps


def test_the_quantization_config_skips_the_tower_projector_and_head():
    """The config only (`tests/test_train_qlora.py` runs the 4-bit layers)."""
    *_, model_args = train.parse_args(
        ["tiny/stage2_vision.yaml", "--use_peft", "true", "--load_in_4bit", "true", "--dtype", "bfloat16"]
    )
    config = qlora_quantization_config(model_args)
    assert (
        config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.bfloat16
    )
    assert config.llm_int8_skip_modules == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
    *_, plain_args = train.parse_args(["tiny/stage2_vision.yaml"])
    assert qlora_quantization_config(plain_args) is None


def test_labelled_position_loss_equals_trls_fused_loss(stage1_checkpoint, tmp_path):
    from trl import SFTTrainer

    trainer = build(
        *stage_args("stage2_vision", tmp_path, "--model_name_or_path", stage1_checkpoint, "--packing", "false")
    )
    rows = [trainer.train_dataset[i] for i in (0, 1, 20, 30)]  # captions, QA, multi-image, text-only
    batch = trainer.data_collator(rows)
    batch.pop(SKIPPED_KEY)
    model = trainer.model.train()
    ours = trainer.compute_loss(model, dict(batch))
    ours.backward()
    our_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    reference = SFTTrainer.compute_loss(trainer, model, dict(batch))  # TRL's fused LM head over every position
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-5)
    for name, grad in our_grads.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-5), name
    assert set(trainer._metrics["train"]) >= {"entropy", "mean_token_accuracy", "num_tokens"}


def readme_lora_lines() -> list[str]:
    """The README's LoRA -> merge -> push lines, as written (comments dropped)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in readme.splitlines()]
    train_line = next(line for line in lines if line.startswith("towervision train") and "--use_peft" in line)
    merge_line = next(line for line in lines if line.startswith("towervision merge"))
    push_line = next(line for line in lines if line.startswith("towervision push") and "merged" in line)
    return [train_line, merge_line, push_line]


@pytest.mark.slow
def test_readme_lora_merge_push_lines_run_as_written(stage1_checkpoint, tmp_path, monkeypatch, capsys):
    """The three README lines in order, on the tiny recipe and model: each writes where the next one reads."""
    import shlex

    from towervision_cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    train_line, merge_line, push_line = (shlex.split(line)[1:] for line in readme_lora_lines())
    recipe = next(arg for arg in train_line if arg.endswith(".yaml"))
    tiny = ["--model_name_or_path", stage1_checkpoint, "--max_steps", "1", "--lora_r", "4", "--report_to", "none"]
    assert cli_main([arg.replace(recipe, "tiny/stage2_vision.yaml") for arg in train_line] + tiny) == 0
    adapter_dir = Path(merge_line[1])
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "config.json").is_file()
    # pushing the adapter itself is refused with the fix, before anything is staged
    assert cli_main(["push", str(adapter_dir), "--repo-id", "my-org/x", "--dry-run"]) == 2
    assert "holds a LoRA adapter, not a model: merge it first with `towervision merge`" in capsys.readouterr().err
    assert cli_main(merge_line) == 0
    assert Path(push_line[1]) == Path(merge_line[2])
    assert cli_main(push_line) == 0
    assert "dry run: nothing uploaded" in capsys.readouterr().out


def test_logged_module_learning_rates_are_those_of_the_step(stage1_checkpoint, tmp_path):
    """`learning_rate_<group>` is the rate the step used, like transformers' `learning_rate` (not the next one)."""
    argv = ["--model_name_or_path", stage1_checkpoint, "--max_steps", "3", "--logging_steps", "1"]
    trainer = build(*stage_args("stage2_vision", tmp_path, *argv, "--lr_scheduler_type", "linear", "--vision_lr", "0"))
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3 and len({entry["learning_rate"] for entry in logged}) == 3  # the rate decays
    for entry in logged:
        assert entry["learning_rate_projector"] == entry["learning_rate"]
        assert entry["learning_rate_language"] == entry["learning_rate"]


def test_resuming_a_tied_head_reports_no_missing_keys(stage1_checkpoint, tmp_path):
    from torch.nn.modules.module import _IncompatibleKeys
    from transformers import trainer as transformers_trainer
    from transformers.testing_utils import CaptureLogger

    trainer = build(*stage_args("stage2_vision", tmp_path, "--model_name_or_path", stage1_checkpoint))
    model = trainer.model
    assert model.config.tie_word_embeddings
    with CaptureLogger(transformers_trainer.logger) as captured:
        trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight"], []))
    assert "missing keys" not in captured.out
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    with CaptureLogger(transformers_trainer.logger) as captured:  # a truly missing tensor is still reported
        trainer._issue_warnings_after_load(_IncompatibleKeys(["lm_head.weight", "model.image_newline"], []))
    assert "missing keys in the checkpoint model loaded: ['model.image_newline']" in captured.out


def test_untrainable_rows_are_skipped_counted_and_summarised(tmp_path):
    """A `save_to_disk` copy with ShareGPT roles and an empty answer among good rows: `--untrainable skip` trains
    on the good rows and writes the count to train_summary.json; the default refuses the data, naming the row."""
    from datasets import Dataset, DatasetDict

    from towervision_hf.data import load_sample, to_features

    good = load_sample(1).to_list()[:2]
    question, answer = (turn["content"] for turn in good[0]["messages"])
    sharegpt = [{"role": "human", "content": question}, {"role": "gpt", "content": answer}]
    empty = [good[1]["messages"][0], {"role": "assistant", "content": [{"type": "text", "text": ""}]}]
    bad = [{**good[0], "id": "sharegpt", "messages": sharegpt}, {**good[1], "id": "empty", "messages": empty}]
    data = tmp_path / "data"
    DatasetDict({"train": Dataset.from_list(good + bad, features=to_features())}).save_to_disk(str(data))
    common = ("--dataset", str(data), "--max_steps", "1", "--vision_feature_cache", "", "--max_tiles", "1")
    train.run(stage_args("stage1_projector", tmp_path / "out", *common, "--untrainable", "skip"))
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["global_step"] == 1 and summary["skipped_untrainable"] == 2
    with pytest.raises(ValueError, match=r"sample '(sharegpt|empty)'"):
        train.run(stage_args("stage1_projector", tmp_path / "refused", *common))
