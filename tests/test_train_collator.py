"""The training collator: mixed batches of tiled images, multi-image samples, videos and text-only rows; labels on
assistant turns only; over-length samples skipped and counted (or rejected), never truncated."""

import numpy as np
import pytest
import torch
from conftest import VIDEO, image, rows, turn, untrainable_rows

from towervision_hf import TowerVisionForConditionalGeneration
from towervision_hf.checkpoint.tiny import build_tiny_processor, tiny_config
from towervision_hf.training import SKIPPED_KEY, SKIPPED_UNTRAINABLE_KEY, TowerVisionCollator


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
        frames = load_video_frames(entry, num_frames)
        indices = np.linspace(0, len(every_frame) - 1, num_frames).round().astype(int)
        assert np.array_equal(frames, every_frame[indices])


def test_block_count_mismatch_names_the_sample(processor):
    row = rows()[0]
    row["images"] = []
    with pytest.raises(ValueError, match="sample 'tiled' has 1 image blocks but 0 images"):
        TowerVisionCollator(processor)([row])


@pytest.mark.parametrize("case", ["sharegpt", "empty", "no_blocks", "no_answer"])
def test_rows_that_train_on_nothing_raise_naming_the_row(processor, case):
    row, message = untrainable_rows()[case]
    with pytest.raises(ValueError, match=message):
        TowerVisionCollator(processor)([rows()[0], row])


def test_rows_that_train_on_nothing_are_skipped_and_counted_under_the_skip_policy(processor):
    bad = [row for row, _ in untrainable_rows().values()]
    collator = TowerVisionCollator(processor, untrainable="skip")
    batch = collator(rows() + bad)
    assert int(batch[SKIPPED_UNTRAINABLE_KEY]) == 4 and batch["input_ids"].shape[0] == 4
    expected = TowerVisionCollator(processor)(rows())
    assert torch.equal(batch["input_ids"], expected["input_ids"]) and torch.equal(batch["labels"], expected["labels"])
    only_bad = collator(bad)
    assert int(only_bad[SKIPPED_UNTRAINABLE_KEY]) == 4 and (only_bad["labels"] == -100).all()
    assert SKIPPED_UNTRAINABLE_KEY not in expected  # only the skip policy adds the count
    with pytest.raises(ValueError, match="untrainable must be one of"):
        TowerVisionCollator(processor, untrainable="ignore")


def test_string_contents_are_one_text_block(processor):
    row = rows()[3]
    messages = [{"role": t["role"], "content": t["content"][0]["text"]} for t in row["messages"]]
    collator = TowerVisionCollator(processor)
    assert torch.equal(collator([{**row, "messages": messages}])["labels"], collator([row])["labels"])


def png(seed=0) -> bytes:
    import io

    buffer = io.BytesIO()
    image(20, 20, seed).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda row: row.pop("messages"), r"sample 'tiled': `messages` must be a non-empty list"),
        (lambda row: row.update(messages="hi"), r"sample 'tiled': `messages` must be a non-empty list"),
        (lambda row: row["messages"].__setitem__(1, "Red."), r"sample 'tiled': messages\[1\] must be a dict with"),
        (lambda row: row["messages"][0]["content"].append({"type": "audio"}), r"messages\[0\]\.content\[2\] has type"),
        (lambda row: row["messages"][0]["content"].__setitem__(1, {"type": "text"}), r"content\[1\] is a text block"),
        (lambda row: row.update(images={"path": "x.png"}), "sample 'tiled': `images` must be a list"),
        (
            lambda row: row.update(images=[{"bytes": b"not an image", "path": None, "url": None}]),
            r"sample 'tiled': images\[0\]: cannot decode image bytes: UnidentifiedImageError",
        ),
        (
            lambda row: row.update(images=[{"bytes": png()[:40], "path": None, "url": None}]),
            r"sample 'tiled': images\[0\]: ",
        ),
        (
            lambda row: row.update(images=[{"bytes": None, "path": "/nonexistent/cat.png", "url": None}]),
            r"sample 'tiled': images\[0\]: cannot decode image /nonexistent/cat.png: FileNotFoundError",
        ),
        (
            lambda row: row.update(images=[{"file": "cat.png"}]),
            r"sample 'tiled': images\[0\]: media entry .* has none of bytes, path, url",
        ),
        (
            lambda row: row.update(
                images=[],
                videos=[{"bytes": b"not a video", "path": None, "url": None}],
                messages=[turn("user", VIDEO, "Go?"), turn("assistant", "Left.")],
            ),
            r"sample 'tiled': videos\[0\]: Video bytes .* could not be opened",
        ),
    ],
)
def test_malformed_rows_and_undecodable_media_name_the_row_and_field(processor, change, message):
    row = rows()[0]
    change(row)
    for untrainable in ("error", "skip"):  # never skipped silently
        with pytest.raises(ValueError, match=message):
            TowerVisionCollator(processor, untrainable=untrainable)([rows()[3], row])


def test_rows_must_be_dicts(processor):
    with pytest.raises(ValueError, match="a row must be a dict, got list"):
        TowerVisionCollator(processor)([[turn("user", "Hi")]])
