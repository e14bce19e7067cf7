"""Packed multimodal SFT: token counts measured before decoding, first-fit-decreasing packs, packed rows whose loss and
gradients equal the samples run one by one (transformers' eager and our sample-wise eager, a sliding window shorter
than the row), sample-wise eager equal to eager wherever a mask is given, and the recipe switch in training."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import IMAGE, jpeg_entry, mixed_rows, per_sample_loss_and_grads, rows, turn, untrainable_rows

from towervision_hf import TowerVisionForConditionalGeneration, train
from towervision_hf.checkpoint.tiny import build_tiny_processor, tiny_config
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator
from towervision_hf.training.attention import SAMPLE_EAGER
from towervision_hf.training.collator import SKIPPED_UNTRAINABLE_KEY
from towervision_hf.training.packing import (
    PACKING_KEY,
    Packer,
    SampleMeasure,
    TowerVisionPackedCollator,
    first_fit_decreasing,
    image_size_from_header,
    pack_dataset,
    pack_stream,
)


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


@pytest.mark.parametrize("image_aspect_ratio", ["anyres", "square"])
def test_measure_matches_the_collated_length_and_tiles_without_decoding(processor, image_aspect_ratio):
    processor = copy.deepcopy(processor)
    processor.image_processor.image_aspect_ratio = image_aspect_ratio  # "square": stage 1's one tile per image
    collator = TowerVisionCollator(processor)
    measure = SampleMeasure(processor, collator.num_frames)
    for row in mixed_rows():
        batch = collator([row])
        tiles = (batch["pixel_values"].flatten(2).abs().sum(-1) > 0).sum() if "pixel_values" in batch else 0
        frames = batch["pixel_values_videos"].shape[1] if "pixel_values_videos" in batch else 0
        assert measure(row) == (int(batch["attention_mask"].sum()), int(tiles) + frames), row["id"]
    assert image_size_from_header(jpeg_entry(60, 150, orientation=6)) == (150, 60)


def bomb_png_bytes(side=100_000):
    """A PNG whose header claims `side` x `side` pixels (a decompression bomb), with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # RGB, 8 bits
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "entry, error",
    [
        ({"bytes": b"these bytes are no image", "path": None, "url": None}, "UnidentifiedImageError"),
        ({"bytes": None, "path": "/nonexistent/picture.png", "url": None}, "FileNotFoundError"),
        ({"bytes": bomb_png_bytes(), "path": None, "url": None}, "DecompressionBombError"),
    ],
)
def test_a_bad_image_met_while_measuring_names_the_row_as_unpacked_training_does(processor, entry, error):
    row = {
        "id": "bad-row",
        "images": [entry],
        "videos": [],
        "messages": [turn("user", IMAGE, "Describe."), turn("assistant", "Noise.")],
    }
    message = rf"sample 'bad-row': images\[0\]: (cannot decode image \S+: )?{error}: "
    with pytest.raises(ValueError, match=message):
        TowerVisionCollator(processor).conversation(copy.deepcopy(row))  # the unpacked path
    with pytest.raises(ValueError, match=message):
        list(Packer(SampleMeasure(processor, 4), max_length=4096).pack([row]))


def test_first_fit_decreasing_fills_rows_without_splitting_or_losing_samples():
    rng = np.random.default_rng(0)
    costs = [(int(t), int(v)) for t, v in zip(rng.integers(10, 100, 200), rng.integers(0, 8, 200))]
    costs.append((40, 30))  # more tiles than the cap: a row of its own
    packs = first_fit_decreasing(costs, max_length=256, max_row_tiles=24)
    assert sorted(i for pack in packs for i in pack) == list(range(len(costs)))
    assert [200] in packs
    for pack in packs:
        assert sum(costs[i][0] for i in pack) <= 256 and pack == sorted(pack)
        assert len(pack) == 1 or sum(costs[i][1] for i in pack) <= 24
    assert sum(t for t, _ in costs) / (256 * len(packs)) > 0.9
    assert first_fit_decreasing(costs, 256, 24) == packs


def test_packer_skips_and_counts_or_names_over_length_samples():
    costs = {"a": (50, 1), "long": (500, 1), "b": (60, 1), "c": (30, 0), "longer": (900, 0)}
    packer = Packer(lambda row: costs[row["id"]], max_length=100, buffer_size=3)
    packs = list(packer.pack([{"id": name} for name in costs]))
    assert [[row["id"] for row in pack] for pack, _ in packs] == [["b", "c"], ["a"]]  # first fit, longest first
    assert sum(skipped for _, skipped in packs) == 2
    with pytest.raises(ValueError, match="sample 'long' is 500 tokens long, over max_length=100"):
        list(Packer(lambda row: costs[row["id"]], max_length=100, over_length="error").pack([{"id": "long"}]))


def test_packed_rows_restart_positions_and_keep_labels_inside_samples(processor):
    samples = mixed_rows()
    packs = [{"packed_rows": samples[:3], SKIPPED_KEY: 1}, {"packed_rows": samples[3:], SKIPPED_KEY: 0}]
    batch = TowerVisionPackedCollator(processor, max_length=4096)(packs)
    unpacked = TowerVisionCollator(processor)(samples)
    lengths = unpacked["attention_mask"].sum(1).tolist()
    assert "attention_mask" not in batch and batch["input_ids"].shape == (2, max(sum(lengths[:3]), sum(lengths[3:])))
    for key in ("pixel_values", "image_sizes", "batch_num_images", "pixel_values_videos"):
        assert torch.equal(batch[key], unpacked[key]), key  # same pixels, in sample order
    starts = {0: [0, lengths[0], lengths[0] + lengths[1]], 1: [0, lengths[3], lengths[3] + lengths[4]]}
    for row, firsts in starts.items():
        positions = batch["position_ids"][row]
        assert (positions == 0).nonzero().flatten().tolist()[: len(firsts)] == firsts
    for row, indices in ((0, range(3)), (1, range(3, 6))):
        expected_ids = torch.cat([unpacked["input_ids"][i, : lengths[i]] for i in indices])
        expected_labels = torch.cat([unpacked["labels"][i, : lengths[i]] for i in indices])
        n = len(expected_ids)
        assert torch.equal(batch["input_ids"][row, :n], expected_ids)
        assert torch.equal(batch["labels"][row, :n], expected_labels)
        assert (batch["labels"][row, n:] == -100).all()
    first_tokens = batch["labels"][batch["position_ids"] == 0]
    assert (first_tokens == -100).all()
    assert int(batch[SKIPPED_KEY]) == 1
    assert batch[PACKING_KEY].tolist() == [6, 2, sum(lengths), 2 * 4096]
    flat = TowerVisionPackedCollator(processor, max_length=4096, flatten=True)(packs)
    assert flat["input_ids"].shape == (1, sum(lengths)) and flat["position_ids"][0].eq(0).sum() == 6
    with pytest.raises(ValueError, match="over max_length=100: they were measured with other processor settings"):
        TowerVisionPackedCollator(processor, max_length=100)(packs)


def test_packed_untrainable_samples_raise_or_leave_their_pack_counted(processor):
    bad = [row for row, _ in untrainable_rows().values()]
    good = rows()
    packs = [
        {"packed_rows": [good[0], bad[0], good[1]], SKIPPED_KEY: 0},
        {"packed_rows": bad[1:], SKIPPED_KEY: 1},  # nothing trainable: no row
        {"packed_rows": good[2:], SKIPPED_KEY: 0},
    ]
    with pytest.raises(ValueError, match="sample 'sharegpt'"):
        TowerVisionPackedCollator(processor, max_length=4096)(packs)
    batch = TowerVisionPackedCollator(processor, max_length=4096, untrainable="skip")(packs)
    expected = TowerVisionPackedCollator(processor, max_length=4096)(
        [{"packed_rows": good[:2], SKIPPED_KEY: 0}, {"packed_rows": good[2:], SKIPPED_KEY: 0}]
    )
    assert int(batch[SKIPPED_UNTRAINABLE_KEY]) == 4 and int(batch[SKIPPED_KEY]) == 1
    for key in ("input_ids", "position_ids", "labels", "pixel_values", "pixel_values_videos"):
        assert torch.equal(batch[key], expected[key]), key
    assert batch[PACKING_KEY].tolist()[:2] == [len(good), 2]  # samples, rows

    empty = TowerVisionPackedCollator(processor, max_length=4096, untrainable="skip")([packs[1]])
    assert int(empty[SKIPPED_UNTRAINABLE_KEY]) == 3 and empty["input_ids"].shape == (1, 1)
    assert (empty["labels"] == -100).all() and empty[PACKING_KEY].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("attention", ["eager", SAMPLE_EAGER])
def test_packed_batch_gives_the_loss_and_gradients_of_the_samples_one_by_one(processor, attention):
    # transformers' eager attention over the whole row, and our sample-wise eager (Gemma2 has no SDPA path in
    # transformers: it cannot softcap); the samples one by one always run transformers' eager
    torch.manual_seed(0)
    config = tiny_config(processor.tokenizer)
    config.text_config.sliding_window = 16  # far shorter than the packed rows: sliding layers must see boundaries
    model = TowerVisionForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    samples = mixed_rows()
    one_by_one = [TowerVisionCollator(processor)([row]) for row in samples]
    packs = [{"packed_rows": samples[:4], SKIPPED_KEY: 0}, {"packed_rows": samples[4:], SKIPPED_KEY: 0}]
    packed = TowerVisionPackedCollator(processor, max_length=4096)(packs)

    expected_loss, expected_grads = per_sample_loss_and_grads(model, one_by_one)
    model.set_attn_implementation({"text_config": attention})
    loss, grads = per_sample_loss_and_grads(model, [packed])
    assert loss == pytest.approx(expected_loss, rel=1e-6, abs=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-5, atol=1e-5, msg=name)

    # the same rows with positions running on across samples attend across them: the check above can fail
    leaking = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    assert per_sample_loss_and_grads(model, [leaking])[0] != pytest.approx(expected_loss, rel=1e-4)


def test_sample_wise_eager_is_eager_wherever_a_mask_is_given(processor):
    """Padded batches and generation build eager's mask, and sample-wise eager then runs eager's arithmetic on it."""
    torch.manual_seed(0)
    config = tiny_config(processor.tokenizer)
    config.text_config.sliding_window = 16
    model = TowerVisionForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    batch = TowerVisionCollator(processor)(mixed_rows()[:4])
    inputs = {k: v for k, v in batch.items() if k not in ("labels", SKIPPED_KEY)}
    prompt = processor(text="<start_of_turn>user\nHallo<end_of_turn>\n<start_of_turn>model\n", return_tensors="pt")
    outputs = []
    for attention in ("eager", SAMPLE_EAGER):
        model.set_attn_implementation({"text_config": attention})
        with torch.no_grad():
            logits = model(**inputs).logits
        tokens = model.generate(**prompt, max_new_tokens=24, do_sample=False)  # past the sliding window
        outputs.append((logits, tokens))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def schema_rows(count):
    return [
        {
            "id": str(i),
            "messages": [turn("user", "x" * (i % 7 * 10 + 5)), turn("assistant", "y" * (i % 5 * 10 + 3))],
            "images": [],
            "videos": [],
        }
        for i in range(count)
    ]


def pack_ids(packs):
    return [[row["id"] for row in pack["packed_rows"]] for pack in packs]


def test_packed_datasets_are_deterministic_and_cover_every_sample(processor):
    import datasets

    packer = Packer(SampleMeasure(processor, 4), max_length=256, buffer_size=16)
    dataset = datasets.Dataset.from_list(schema_rows(40))
    planned = pack_ids(pack_dataset(dataset, packer, seed=3))
    assert sorted(i for pack in planned for i in pack) == sorted(dataset["id"]) and len(planned) < 40
    assert planned == pack_ids(pack_dataset(dataset, packer, seed=3))
    assert planned != pack_ids(pack_dataset(dataset, packer, seed=4))

    stream = pack_stream(dataset.to_iterable_dataset(num_shards=2).shuffle(seed=0, buffer_size=8), packer)
    epoch0 = pack_ids(stream)
    assert epoch0 == pack_ids(stream)
    assert sorted(i for pack in epoch0 for i in pack) == sorted(dataset["id"])
    stream.set_epoch(1)
    assert pack_ids(stream) != epoch0
    assert 1 < packer.samples_per_row(dataset) <= 16


def test_packing_switch_trains_and_reports_efficiency(tmp_path):
    argv = [
        "tiny/stage2_vision.yaml",
        "--model_name_or_path",
        "tiny",
        "--output_dir",
        str(tmp_path),
        "--packing",
        "true",
        "--max_length",
        "1024",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "2",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    trainer = train.run(argv)
    assert isinstance(trainer.data_collator, TowerVisionPackedCollator)
    assert trainer.model.config.text_config._attn_implementation == SAMPLE_EAGER
    assert SAMPLE_EAGER not in (tmp_path / "config.json").read_text()  # the checkpoint loads with plain eager
    assert len(trainer.train_dataset) < 32 and sum(len(p["packed_rows"]) for p in trainer.train_dataset) == 32
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(0.5 < entry["pack_efficiency"] <= 1 and entry["samples_per_row"] > 1 for entry in logged)
    summary = json.loads((tmp_path / "train_summary.json").read_text())["packing"]
    assert summary["rows"] == 4 and summary["samples"] == 4 * summary["samples_per_row"]
    assert summary["pack_efficiency"] == pytest.approx(summary["tokens"] / (4 * 1024))


def test_packed_stage1_with_the_feature_cache_gives_the_same_losses(tmp_path):
    """Packed rows read the stage-1 feature cache tile by tile, in sample order: the losses of a run that reads it
    back equal those of a run without it."""
    runs = {}
    for name, cache in (("plain", ""), ("cached", str(tmp_path / "cache"))):
        argv = [
            "tiny/stage1_projector.yaml", "--output_dir", str(tmp_path / name), "--report_to", "none",
            "--disable_tqdm", "true", "--packing", "true", "--max_length", "512", "--per_device_train_batch_size", "1",
            "--max_steps", "6", "--vision_feature_cache", cache,
        ]  # fmt: skip
        trainer = train.build_trainer(*train.parse_args(argv))
        trainer.train()
        runs[name] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], trainer
    (plain, _), (cached, trainer) = runs["plain"], runs["cached"]
    assert trainer.packing_totals[0] > trainer.packing_totals[1]  # several samples per row
    assert trainer.feature_cache.hits > 0 and cached == pytest.approx(plain, rel=1e-6)
