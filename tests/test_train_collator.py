"""The training collator: mixed batches of tiled images, multi-image samples, videos and text-only rows; labels on
assistant turns only; over-length samples skipped and counted (or rejected), never truncated."""

import numpy as np
import pytest
import torch
from PIL import Image

from towervision_hf import TowerVisionForConditionalGeneration
from towervision_hf.tiny import build_tiny_processor, tiny_config
from towervision_hf.training import SKIPPED_KEY, TowerVisionCollator
from towervision_hf.training.collator import decode_video


def image(height, width, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def turn(role, *blocks):
    return {"role": role, "content": [{"type": "text", "text": b} if isinstance(b, str) else b for b in blocks]}


IMAGE, VIDEO = {"type": "image", "text": None}, {"type": "video", "text": None}


def rows():
    """A tiled single image (two QA turns), a two-image sample, a video and a text-only row."""
    return [
        {
            "id": "tiled",
            "images": [image(90, 200, 0)],
            "videos": [],
            "messages": [
                turn("user", IMAGE, "What colour?"),
                turn("assistant", "Red."),
                turn("user", "Which shape?"),
                turn("assistant", "A circle."),
            ],
        },
        {
            "id": "multi",
            "images": [image(40, 60, 1), image(70, 50, 2)],
            "videos": [],
            "messages": [turn("user", IMAGE, IMAGE, "Same colour?"), turn("assistant", "Nein.")],
        },
        {
            "id": "video",
            "images": [],
            "videos": [np.random.default_rng(3).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)],
            "messages": [turn("user", VIDEO, "Where does it go?"), turn("assistant", "To the left.")],
        },
        {
            "id": "text",
            "images": [],
            "videos": [],
            "messages": [turn("system", "Be brief."), turn("user", "Translate: hello"), turn("assistant", "Olá")],
        },
    ]


ANSWERS = {"tiled": ["Red.", "A circle."], "multi": ["Nein."], "video": ["To the left."], "text": ["Olá"]}


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return TowerVisionForConditionalGeneration._from_config(
        tiny_config(processor.tokenizer), attn_implementation="eager"
    ).eval()


def summed_loss(model, batch):
    """Sum of next-token cross-entropy over the labelled positions (what TRL's fused loss adds up)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", SKIPPED_KEY)}
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
    )


def test_mixed_batch_labels_only_assistant_turns(processor, model):
    batch = TowerVisionCollator(processor)(rows())
    assert batch["input_ids"].shape[0] == 4 and int(batch[SKIPPED_KEY]) == 0
    assert batch["batch_num_images"].tolist() == [1, 2]
    assert batch["pixel_values_videos"].shape[:2] == (1, processor.video_processor.num_frames)
    labels = batch["labels"]
    for index, row in enumerate(rows()):
        trained = batch["input_ids"][index][labels[index] != -100]
        assert processor.tokenizer.decode(trained) == "".join(f"{a}<end_of_turn>\n" for a in ANSWERS[row["id"]])
    media = torch.tensor([processor.image_token_id, processor.video_token_id])
    assert torch.isin(batch["input_ids"], media).any()
    assert not torch.isin(labels, media).any()
    assert (labels[batch["attention_mask"] == 0] == -100).all()
    assert torch.isfinite(summed_loss(model, batch))


def test_over_length_samples_are_skipped_and_counted_never_truncated(processor):
    full = TowerVisionCollator(processor)(rows())
    lengths = full["attention_mask"].sum(1).tolist()
    max_length = sorted(lengths)[1]  # only the two shortest rows fit
    batch = TowerVisionCollator(processor, max_length=max_length)(rows())
    kept = [i for i, n in enumerate(lengths) if n <= max_length]
    assert int(batch[SKIPPED_KEY]) == 2 and batch["input_ids"].shape[0] == len(kept) == 2
    assert batch["attention_mask"].sum(1).tolist() == [lengths[i] for i in kept]  # whole samples, nothing cut
    for row, index in enumerate(kept):
        n = lengths[index]
        assert torch.equal(batch["input_ids"][row, :n], full["input_ids"][index, :n])


def test_over_length_error_names_the_sample(processor):
    with pytest.raises(ValueError, match="sample 'tiled' is .* tokens long, over max_length=64"):
        TowerVisionCollator(processor, max_length=64, over_length="error")(rows()[:1])


def test_batch_of_only_over_length_samples_trains_on_nothing(processor, model):
    batch = TowerVisionCollator(processor, max_length=8)(rows())
    assert int(batch[SKIPPED_KEY]) == 4
    assert (batch["labels"] == -100).all()
    assert summed_loss(model, batch) == 0


def test_blank_image_row_keeps_vision_in_text_only_batches_without_changing_the_loss(processor, model):
    text_only = [rows()[3]]
    plain = TowerVisionCollator(processor)(text_only)
    padded = TowerVisionCollator(processor, include_vision_in_every_batch=True)(text_only)
    assert "pixel_values" not in plain and padded["pixel_values"].shape[0] == 1
    assert padded["input_ids"].shape[0] == 2 and (padded["labels"][1] == -100).all()
    assert torch.allclose(summed_loss(model, plain), summed_loss(model, padded), atol=1e-5)
    with_media = TowerVisionCollator(processor, include_vision_in_every_batch=True)(rows()[:1])
    assert with_media["input_ids"].shape[0] == 1  # batches with media are left alone


def test_schema_rows_with_encoded_media(processor):
    from towervision_hf.data import load_sample
    from towervision_hf.data.schema import load_video_frames

    image_row, video_row = load_sample(2)[0], load_sample(3)[0]
    batch = TowerVisionCollator(processor, num_frames=4)([image_row, video_row])
    assert batch["pixel_values"].shape[0] == 1 and batch["pixel_values_videos"].shape[:2] == (1, 4)
    entry = video_row["videos"][0]
    every_frame = load_video_frames(entry)
    for num_frames in (3, 32):  # fewer and more frames than the clip has (short clips repeat frames)
        frames = decode_video(entry, num_frames)
        indices = np.linspace(0, len(every_frame) - 1, num_frames).round().astype(int)
        assert np.array_equal(frames, every_frame[indices])


def test_block_count_mismatch_names_the_sample(processor):
    row = rows()[0]
    row["images"] = []
    with pytest.raises(ValueError, match="sample 'tiled' has 1 image blocks but 0 images"):
        TowerVisionCollator(processor)([row])
