"""Training stages on the tiny recipes: freezing and per-module learning rates, the stage-1 feature cache, LoRA with
the image newline, merging, and the checkpoint's own remote code. Everything runs on CPU in-process."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from towervision_hf import train
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator, module_group
from towervision_hf.training.feature_cache import vision_tower_identity


def stage_args(stage, output_dir, *extra):
    return [
        f"tiny/{stage}.yaml",
        "--output_dir",
        str(output_dir),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *extra,
    ]


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


def test_stage1_changes_only_projector_and_newline(tmp_path):
    trainer = build(*stage_args("stage1_projector", tmp_path, "--max_steps", "2", "--vision_feature_cache", ""))
    before = snapshot(trainer.model)
    trainer.train()
    changed = {name for name, value in snapshot(trainer.model).items() if not torch.equal(value, before[name])}
    trainable = {name for name in before if module_group(name) == "projector"}
    assert "model.image_newline" in trainable
    assert changed == trainable


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

    assert train.merge_main([str(adapter_dir), str(merged_dir)]) == 0
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
    from towervision_hf.training.trainer import restore_image_newline

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
    # stage 1 saves a one-tile model and processor (thumbnail + 1 tile); stage 2 widens both back to 6 tiles
    processor = AutoProcessor.from_pretrained(stage1_checkpoint)
    config = json.loads((Path(stage1_checkpoint) / "config.json").read_text())
    assert config["max_tiles"] == processor.image_processor.max_tiles == 1
    assert processor.image_processor([Image.new("RGB", (300, 100))])["pixel_values"].shape[1] == 2
    stage2 = build(*stage_args("stage2_vision", tmp_path, "--model_name_or_path", stage1_checkpoint))
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


def test_qlora_quantizes_only_the_language_model():
    *_, model_args = train.parse_args(
        ["tiny/stage2_vision.yaml", "--use_peft", "true", "--load_in_4bit", "true", "--dtype", "bfloat16"]
    )
    config = train.qlora_quantization_config(model_args)
    assert (
        config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_compute_dtype == torch.bfloat16
    )
    assert config.llm_int8_skip_modules == ["vision_tower", "multi_modal_projector", "lm_head"]
    *_, plain_args = train.parse_args(["tiny/stage2_vision.yaml"])
    assert train.qlora_quantization_config(plain_args) is None


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
