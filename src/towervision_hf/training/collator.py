"""Batches of sample-schema rows (see `towervision_hf.data.schema`) for TowerVision training.

TRL's `DataCollatorForVisionLanguageModeling` knows only images and leaves `<image>` tokens in the labels. This
collator takes rows with any mix of tiled single images, multi-image samples, videos and text-only conversations,
renders them with the processor's chat template (`apply_chat_template` with `return_assistant_tokens_mask`) and builds
labels on the assistant turns only: prompts, `<image>` / `<video>` placeholders and padding are `-100`.

Nothing is ever truncated: a sample longer than `max_length` is dropped from its batch and counted
(`over_length="skip"`, the count travels in the batch under `SKIPPED_KEY` for the trainer to log), or raises a
`ValueError` naming it (`over_length="error"`). Cutting a sequence would cut through image tokens.
"""


import numpy as np
import torch
from PIL import Image


SKIPPED_KEY = "num_skipped_over_length"
OVER_LENGTH_POLICIES = ("skip", "error")


def decode_image(entry) -> Image.Image:
    """An RGB PIL image from a schema media entry (`{"bytes", "path", "url"}`) or an in-memory PIL image."""
    if isinstance(entry, Image.Image):
        return entry.convert("RGB")
    from ..data.schema import load_image

    return load_image(entry)


def decode_video(entry, num_frames: int) -> np.ndarray:
    """Frames of a schema media entry, or an in-memory `(T, H, W, 3)` array passed through unchanged."""
    if isinstance(entry, (np.ndarray, torch.Tensor)):
        return entry
    from ..data.schema import load_video_frames

    return load_video_frames(entry, num_frames)


class TowerVisionCollator:
    r"""
    Collate sample-schema rows into model inputs with assistant-only labels.

    Args:
        processor ([`ProcessorMixin`]):
            A TowerVision processor (tokenizer with a chat template carrying `{% generation %}` markers, image and
            video processors).
        max_length (`int`, *optional*):
            Longest sequence kept, in tokens (placeholders included); `None` keeps everything.
        over_length (`str`, *optional*, defaults to `"skip"`):
            `"skip"` drops longer samples and counts them, `"error"` raises a `ValueError` naming the sample.
        num_frames (`int`, *optional*):
            Frames sampled per video; defaults to the video processor's `num_frames`.
        include_vision_in_every_batch (`bool`, *optional*, defaults to `False`):
            Append a fully masked row with a blank image to batches without images or videos, so that every rank
            runs the vision tower and projector. Sharded engines (FSDP, DeepSpeed ZeRO-3) need this, since their
            collectives hang when one rank skips a module; the loss is unchanged (the row has no labels).

    Rows are dicts with `messages` (content blocks `{"type": "text"|"image"|"video", ...}`), `images` and `videos`
    (schema media entries, or in-memory PIL images / frame arrays); `id` is used in error messages.
    """

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        over_length: str = "skip",
        num_frames: int | None = None,
        include_vision_in_every_batch: bool = False,
    ):
        if over_length not in OVER_LENGTH_POLICIES:
            raise ValueError(f"over_length must be one of {OVER_LENGTH_POLICIES}, got {over_length!r}")
        self.processor = processor
        self.max_length = max_length
        self.over_length = over_length
        video_processor = getattr(processor, "video_processor", None)
        self.num_frames = num_frames or getattr(video_processor, "num_frames", None) or 32
        self.include_vision_in_every_batch = include_vision_in_every_batch
        tokenizer = processor.tokenizer
        self.media_token_ids = [
            token_id
            for token_id in (getattr(processor, "image_token_id", None), getattr(processor, "video_token_id", None))
            if token_id is not None
        ]
        self.filler_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id

    def conversation(self, row: dict) -> list[dict]:
        """The row's messages with decoded media in their image/video blocks, as `apply_chat_template` takes them."""
        name = f"sample {row.get('id', '?')!r}"
        images, videos = list(row.get("images") or []), list(row.get("videos") or [])
        blocks = [block for turn in row["messages"] for block in turn["content"]]
        for kind, entries in (("image", images), ("video", videos)):
            count = sum(block["type"] == kind for block in blocks)
            if count != len(entries):
                raise ValueError(f"{name} has {count} {kind} blocks but {len(entries)} {kind}s")
        images, videos = iter(images), iter(videos)
        turns = []
        for turn in row["messages"]:
            content = []
            for block in turn["content"]:
                if block["type"] == "text":
                    content.append({"type": "text", "text": block["text"]})
                elif block["type"] == "image":
                    content.append({"type": "image", "image": self._decode(decode_image, next(images), name)})
                elif block["type"] == "video":
                    content.append({"type": "video", "video": self._decode(decode_video, next(videos), name)})
                else:
                    raise ValueError(f"{name} has a content block of unknown type {block['type']!r}")
            turns.append({"role": turn["role"], "content": content})
        return turns

    def _decode(self, decoder, entry, name: str):
        try:
            return decoder(entry) if decoder is decode_image else decoder(entry, self.num_frames)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from error

    def _blank_conversation(self) -> list[dict]:
        image_processor = self.processor.image_processor
        size = getattr(image_processor, "size", None) or {}
        side = getattr(image_processor, "tile_size", None) or size.get("height") or size.get("shortest_edge")
        blank = Image.new("RGB", (side, side), (255, 255, 255))
        return [{"role": "user", "content": [{"type": "image", "image": blank}]}]

    def _process(self, conversations: list[list[dict]]):
        processor_kwargs = {"padding": True, "padding_side": "right", "truncation": False, "add_special_tokens": False}
        if any(block["type"] == "video" for turns in conversations for turn in turns for block in turn["content"]):
            processor_kwargs["num_frames"] = self.num_frames
        return self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs=processor_kwargs,
        )

    def __call__(self, rows: list[dict]) -> dict:
        conversations = [self.conversation(row) for row in rows]
        has_media = [bool(row.get("images")) or bool(row.get("videos")) for row in rows]
        with_blank = self.include_vision_in_every_batch and not any(has_media)
        batch = self._process(conversations + [self._blank_conversation()] * with_blank)
        lengths = batch["attention_mask"].sum(dim=1)[: len(rows)].tolist()
        too_long = [] if self.max_length is None else [i for i, n in enumerate(lengths) if n > self.max_length]
        if too_long and self.over_length == "error":
            index = too_long[0]
            raise ValueError(
                f"sample {rows[index].get('id', index)!r} is {lengths[index]} tokens long, over max_length="
                f"{self.max_length}; it cannot be truncated without cutting image/video tokens. Raise max_length, "
                "lower max_tiles / num_frames, or set over_length: skip to drop such samples."
            )
        if too_long:
            kept = [i for i in range(len(rows)) if i not in too_long]
            conversations = [conversations[i] for i in kept]
            with_blank = self.include_vision_in_every_batch and not any(has_media[i] for i in kept)
            if conversations or with_blank:
                batch = self._process(conversations + [self._blank_conversation()] * with_blank)
            else:  # every sample was too long: one fully masked token keeps the step well-formed
                batch = {
                    "input_ids": torch.tensor([[self.filler_token_id]]),
                    "attention_mask": torch.ones(1, 1, dtype=torch.long),
                    "assistant_masks": torch.zeros(1, 1, dtype=torch.long),
                }
        batch = dict(batch)
        labels = batch["input_ids"].masked_fill(torch.as_tensor(batch.pop("assistant_masks")) == 0, -100)
        labels[batch["attention_mask"] == 0] = -100
        if self.media_token_ids:
            labels[torch.isin(batch["input_ids"], torch.tensor(self.media_token_ids))] = -100
        batch["labels"] = labels
        batch[SKIPPED_KEY] = torch.tensor(len(too_long))
        return batch
