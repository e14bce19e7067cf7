"""QLoRA executed on CPU (bitsandbytes' CPU backend): `towervision train --use_peft true --load_in_4bit true` on the
tiny checkpoint runs 4-bit language-model layers and a full-precision vision tower and projector, its loss goes down,
`train_summary.json` records the quantization, and `towervision merge` folds the adapter into a full-precision
checkpoint that loads and generates."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from towervision_hf import train
from towervision_hf.checkpoint.cli import merge_main
from towervision_hf.checkpoint.compose import build_tiny


bnb = pytest.importorskip("bitsandbytes", reason="the qlora extra (bitsandbytes) is not installed")


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    model, processor = build_tiny(seed=0)
    model.save_pretrained(base)
    processor.save_pretrained(base)
    output_dir = tmp_path_factory.mktemp("qlora")
    # 3 samples make one packed row: every step trains on the same row, so the loss must go down
    trainer = train.run(
        [
            "tiny/stage2_vision.yaml", "--model_name_or_path", str(base), "--output_dir", str(output_dir),
            "--use_peft", "true", "--load_in_4bit", "true", "--max_samples", "3", "--max_steps", "4",
            "--logging_steps", "1", "--disable_tqdm", "true",
        ]
    )  # fmt: skip
    return base, output_dir, trainer


@pytest.mark.slow
def test_qlora_trains_4bit_language_layers_and_a_full_precision_tower(qlora_run):
    _, output_dir, trainer = qlora_run
    modules = dict(trainer.model.named_modules())
    quantized = [name for name, module in modules.items() if isinstance(module, bnb.nn.Linear4bit)]
    assert quantized and all(".language_model.layers." in name for name in quantized)
    assert len(quantized) == 2 * 7  # q/k/v/o and gate/up/down of each of the 2 decoder layers
    assert all(
        type(module) is torch.nn.Linear
        for name, module in modules.items()
        if ".vision_tower." in name or ".multi_modal_projector." in name or name.endswith("lm_head")
        if isinstance(module, torch.nn.Linear)
    )
    # the 4-bit weights stay frozen; the LoRA adapters, vision tower and projector train
    trained = {name for name, param in trainer.model.named_parameters() if param.requires_grad}
    assert any("lora_A" in name and ".language_model." in name for name in trained)
    assert any(".vision_tower." in name for name in trained) and any(
        ".multi_modal_projector." in name for name in trained
    )
    assert not any(
        isinstance(param, bnb.nn.Params4bit) for name, param in trainer.model.named_parameters() if name in trained
    )

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["quantization"] == {
        "method": "bitsandbytes", "bits": 4, "quant_type": "nf4", "compute_dtype": "float32", "double_quant": False,
        "quantized_linear_layers": {"language": 14, "projector": 0, "vision": 0},
    }  # fmt: skip


@pytest.mark.slow
def test_qlora_adapter_merges_into_a_full_precision_checkpoint_that_generates(qlora_run, tmp_path):
    base, output_dir, _ = qlora_run
    merged_dir = tmp_path / "merged"
    assert merge_main([str(output_dir), str(merged_dir)]) == 0
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())

    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True)
    assert not any(isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for module in merged.modules())
    assert {param.dtype for param in merged.parameters()} == {torch.float32}
    original = AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=True)
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], original.state_dict()[name])  # the adapter was folded in
    input_ids = torch.tensor([[2, 10, 11, 12]])
    generated = merged.generate(input_ids=input_ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 8) and torch.equal(generated[:, :4], input_ids)
