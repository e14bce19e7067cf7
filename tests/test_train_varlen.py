"""The flattened-row path of `towervision train` (packed rows flattened into one row for FlashAttention's varlen
kernel), run on CPU with the pure-torch reference varlen attention (`training.varlen`): the same loss and gradients as
the samples run one by one under eager attention, with the sample boundaries read as `cu_seqlens`."""

import pytest
import torch
from conftest import mixed_rows, per_sample_loss_and_grads

from towervision_hf import TowerVisionForConditionalGeneration, train
from towervision_hf.checkpoint.tiny import build_tiny_processor, tiny_config
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator, varlen
from towervision_hf.training.varlen import REFERENCE_FLASH_VARLEN


def test_flattened_packed_rows_give_the_loss_and_gradients_of_the_samples_one_by_one(tmp_path, monkeypatch):
    processor = build_tiny_processor()
    torch.manual_seed(0)
    config = tiny_config(processor.tokenizer)
    config.text_config.sliding_window = 16  # far shorter than the rows: sliding layers must see the boundaries
    model = TowerVisionForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()

    # the recipe's data packed as `towervision train` packs it for a FlashAttention model: one flattened row
    data_args, training_args, _ = train.parse_args(["tiny/stage2_vision.yaml", "--output_dir", str(tmp_path)])
    model.set_attn_implementation({"text_config": REFERENCE_FLASH_VARLEN})
    dataset, _ = train.load_train_dataset(data_args)
    packs, collator, _ = train.packed_data(dataset, processor, model, training_args)
    assert collator.flatten and model.config.text_config._attn_implementation == REFERENCE_FLASH_VARLEN
    packs = [packs[0], packs[1]]
    flattened = collator(packs)
    assert flattened["input_ids"].shape[0] == 1
    samples = [row for pack in packs for row in pack["packed_rows"]]
    assert len(samples) > 2

    boundaries = []

    def recording(position_ids):
        cu_seqlens, max_lengths = prepare(position_ids)
        boundaries.append(cu_seqlens[0].tolist())
        return cu_seqlens, max_lengths

    prepare = varlen.prepare_fa_kwargs_from_position_ids
    monkeypatch.setattr(varlen, "prepare_fa_kwargs_from_position_ids", recording)
    loss, grads = per_sample_loss_and_grads(model, [flattened])
    one_by_one = [TowerVisionCollator(processor)([row]) for row in samples]
    lengths = [int(batch["attention_mask"].sum()) for batch in one_by_one]
    # every attention layer of the forward ran varlen over the samples' boundaries
    assert boundaries == [torch.tensor([0, *lengths]).cumsum(0).tolist()] * config.text_config.num_hidden_layers

    model.set_attn_implementation({"text_config": "eager"})
    expected_loss, expected_grads = per_sample_loss_and_grads(model, one_by_one)
    assert loss == pytest.approx(expected_loss, rel=1e-6, abs=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-5, msg=name)

    # the same row with positions running on across samples is one long sample: the check above can fail
    model.set_attn_implementation({"text_config": REFERENCE_FLASH_VARLEN})
    leaking = dict(flattened, position_ids=torch.arange(flattened["input_ids"].shape[1])[None])
    assert per_sample_loss_and_grads(model, [leaking])[0] != pytest.approx(expected_loss, rel=1e-4)


def test_reference_varlen_on_padded_rows_is_eager_on_the_unpadded_tokens():
    """The padded-batch branch (FlashAttention unpads each row into one sample): eager's outputs on the real tokens."""
    processor = build_tiny_processor()
    torch.manual_seed(0)
    model = TowerVisionForConditionalGeneration._from_config(
        tiny_config(processor.tokenizer), attn_implementation="eager", dtype=torch.float32
    ).eval()
    rows = [row for row in mixed_rows() if row["images"]][:3]
    batch = TowerVisionCollator(processor)(rows)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", SKIPPED_KEY)}
    assert not batch["attention_mask"].all()  # padded
    with torch.no_grad():
        expected = model(**inputs).logits
        model.set_attn_implementation({"text_config": REFERENCE_FLASH_VARLEN})
        logits = model(**inputs).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=1e-5, atol=1e-5)
