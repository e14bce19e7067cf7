"""Batches of sample-schema rows (see `towervision_hf.data.schema`) for TowerVision training.

TRL's `DataCollatorForVisionLanguageModeling` knows only images and leaves `<image>` tokens in the labels. This
collator takes rows with any mix of tiled single images, multi-image samples, videos and text-only conversations,
renders them with the processor's chat template (`apply_chat_template` with `return_assistant_tokens_mask`) and builds
labels on the assistant turns only: prompts, `<image>` / `<video>` placeholders and padding are `-100`.

Nothing is ever truncated: a sample longer than `max_length` is dropped from its batch and counted
(`over_length="skip"`, the count travels in the batch under `SKIPPED_KEY` for the trainer to log), or raises a
`ValueError` naming it (`over_length="error"`). Cutting a sequence would cut through image tokens.

Nothing trains on nothing either: a row with a role other than system/user/assistant (LLaVA/ShareGPT's `human` /
`gpt` are mapped by the data adapters, never guessed here), without an assistant turn, or with an assistant turn
without text raises a `ValueError` naming it (`untrainable="error"`), or is dropped and counted under
`SKIPPED_UNTRAINABLE_KEY` (`untrainable="skip"`). Malformed rows and media that cannot be decoded always raise a
`ValueError` naming the row id and the field.
"""

import torch
from PIL import Image

from ..data.schema import BLOCK_TYPES, ROLES, load_image, load_video_frames
from .arguments import OVER_LENGTH_POLICIES, UNTRAINABLE_POLICIES


SKIPPED_KEY = "num_skipped_over_length"
SKIPPED_UNTRAINABLE_KEY = "num_skipped_untrainable"
# batch key -> the trainer's running count, logged and written to train_summary.json
SKIP_COUNTERS = {SKIPPED_KEY: "skipped_over_length", SKIPPED_UNTRAINABLE_KEY: "skipped_untrainable"}


class UntrainableRowError(ValueError):
    """A well-formed row that would train on nothing (no assistant text, or a role the chat template cannot tell
    apart from a prompt)."""


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
        untrainable (`str`, *optional*, defaults to `"error"`):
            Rows that would train on nothing (see the module docstring): `"error"` raises a `ValueError` naming the
            row, `"skip"` drops them and counts them under `SKIPPED_UNTRAINABLE_KEY`.
        num_frames (`int`, *optional*):
            Frames sampled per video; defaults to the video processor's `num_frames`.
        include_vision_in_every_batch (`bool`, *optional*, defaults to `False`):
            Append a fully masked row with a blank image to batches without images or videos, so that every rank
            runs the vision tower and projector. Sharded engines (FSDP, DeepSpeed ZeRO-3) need this, since their
            collectives hang when one rank skips a module; the loss is unchanged (the row has no labels).

    Rows are dicts with `messages` (turns `{"role", "content"}`, content a string or blocks
    `{"type": "text"|"image"|"video", ...}`), `images` and `videos` (schema media entries, or in-memory PIL images /
    frame arrays); `id` is used in error messages.
    """

    def __init__(
        self,
        processor,
        max_length: int | None = None,
        over_length: str = "skip",
        num_frames: int | None = None,
        include_vision_in_every_batch: bool = False,
        untrainable: str = "error",
    ):
        if over_length not in OVER_LENGTH_POLICIES:
            raise ValueError(f"over_length must be one of {OVER_LENGTH_POLICIES}, got {over_length!r}")
        if untrainable not in UNTRAINABLE_POLICIES:
            raise ValueError(f"untrainable must be one of {UNTRAINABLE_POLICIES}, got {untrainable!r}")
        self.processor = processor
        self.max_length = max_length
        self.over_length = over_length
        self.untrainable = untrainable
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
        """The row's messages with decoded media in their image/video blocks, as `apply_chat_template` takes them.

        Raises `UntrainableRowError` for rows that would train on nothing, `ValueError` naming the row id and the
        field for malformed rows and media that cannot be decoded.
        """
        if not isinstance(row, dict):
            raise ValueError(f"a row must be a dict, got {type(row).__name__}")
        name = f"sample {row.get('id', '?')!r}"
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{name}: `messages` must be a non-empty list of turns, got {messages!r:.80}")
        turns = [_turn(turn, f"{name}: messages[{index}]") for index, turn in enumerate(messages)]
        _check_trainable(turns, name)
        blocks = [block for turn in turns for block in turn["content"]]
        media = {}
        for kind, column in (("image", "images"), ("video", "videos")):
            entries = row.get(column) or []
            if not isinstance(entries, (list, tuple)):
                raise ValueError(f"{name}: `{column}` must be a list, got {type(entries).__name__}")
            count = sum(block["type"] == kind for block in blocks)
            if count != len(entries):
                raise ValueError(f"{name} has {count} {kind} blocks but {len(entries)} {kind}s")
            media[kind] = iter(enumerate(entries))
        for turn in turns:
            for block in turn["content"]:
                if block["type"] in media:
                    index, entry = next(media[block["type"]])
                    block[block["type"]] = self._decode(block["type"], entry, f"{name}: {block['type']}s[{index}]")
        return turns

    def _decode(self, kind: str, entry, where: str):
        try:
            return load_image(entry) if kind == "image" else load_video_frames(entry, self.num_frames)
        except ValueError as error:  # missing file, undecodable bytes, malformed entry: name the row
            raise ValueError(f"{where}: {error}") from error
        except Exception as error:  # e.g. a dead URL
            raise ValueError(f"{where}: {type(error).__name__}: {error}") from error

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

    def _trainable_conversations(self, rows: list[dict]) -> tuple[list[dict], list[list[dict]], int]:
        """The rows kept, their conversations and the number of untrainable rows dropped (`untrainable="skip"`)."""
        kept, conversations = [], []
        for row in rows:
            try:
                conversations.append(self.conversation(row))
            except UntrainableRowError:
                if self.untrainable == "error":
                    raise
                continue
            kept.append(row)
        return kept, conversations, len(rows) - len(kept)

    def _filler_batch(self) -> dict:
        """One fully masked token: keeps a step well-formed when every sample of the batch was dropped."""
        return {
            "input_ids": torch.tensor([[self.filler_token_id]]),
            "attention_mask": torch.ones(1, 1, dtype=torch.long),
            "assistant_masks": torch.zeros(1, 1, dtype=torch.long),
        }

    def __call__(self, rows: list[dict]) -> dict:
        rows, conversations, num_untrainable = self._trainable_conversations(rows)
        has_media = [bool(row.get("images")) or bool(row.get("videos")) for row in rows]
        with_blank = self.include_vision_in_every_batch and not any(has_media)
        if conversations or with_blank:
            batch = self._process(conversations + [self._blank_conversation()] * with_blank)
        else:
            batch = self._filler_batch()
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
            else:
                batch = self._filler_batch()
        batch = dict(batch)
        labels = batch["input_ids"].masked_fill(torch.as_tensor(batch.pop("assistant_masks")) == 0, -100)
        labels[batch["attention_mask"] == 0] = -100
        if self.media_token_ids:
            labels[torch.isin(batch["input_ids"], torch.tensor(self.media_token_ids))] = -100
        batch["labels"] = labels
        batch[SKIPPED_KEY] = torch.tensor(len(too_long))
        if self.untrainable == "skip":
            batch[SKIPPED_UNTRAINABLE_KEY] = torch.tensor(num_untrainable)
        return batch


def _turn(turn, where: str) -> dict:
    """A copy of a message with its content as a list of blocks (a string is one text block); `ValueError` naming
    `where` when it is malformed."""
    if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
        raise ValueError(f"{where} must be a dict with `role` and `content`, got {turn!r:.80}")
    content = turn["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, (list, tuple)):
        raise ValueError(f"{where}.content must be a string or a list of blocks, got {type(content).__name__}")
    blocks = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            raise ValueError(f"{where}.content[{index}] has type {kind!r}, expected one of {BLOCK_TYPES}")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise ValueError(f"{where}.content[{index}] is a text block without a `text` string")
        blocks.append({"type": "text", "text": block["text"]} if kind == "text" else {"type": kind})
    return {"role": turn["role"], "content": blocks}


def _check_trainable(turns: list[dict], name: str) -> None:
    """`UntrainableRowError` unless every role is known and there is an assistant turn, each with text."""
    for index, turn in enumerate(turns):
        if turn["role"] not in ROLES:
            raise UntrainableRowError(
                f"{name}: messages[{index}].role is {turn['role']!r}, not one of {ROLES}; the chat template would "
                "render it as a prompt and the row would train on nothing. Convert LLaVA/ShareGPT conversations "
                "(`from`/`value`, `human`/`gpt`) with the data adapters (towervision_hf.data.sources)."
            )
        if turn["role"] == "assistant" and not any(
            block["type"] == "text" and block["text"].strip() for block in turn["content"]
        ):
            raise UntrainableRowError(
                f"{name}: messages[{index}] (assistant) has no text; it would train on the end-of-turn marker alone"
            )
    if not any(turn["role"] == "assistant" for turn in turns):
        raise UntrainableRowError(f"{name} has no assistant turn; it would train on nothing")
