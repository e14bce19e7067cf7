"""Packed multimodal SFT: several sample-schema rows per training row, no padding, the same loss.

* [`SampleMeasure`] counts a row's tokens (placeholders included) and its vision-tower inputs (tiles and frames)
  without decoding a pixel: image sizes come from the file header, token counts from `tiling_towervision`.
* [`first_fit_decreasing`] fills rows of `max_length` tokens (and at most `max_row_tiles` tiles + frames);
  [`pack_dataset`] (map-style data, planned once) and [`pack_stream`] (streams) run it over a bounded buffer of
  samples, deterministically for a seed, so exact resume holds. A sample is never split: one longer than
  `max_length` is skipped and counted (or rejected with `over_length="error"`).
* [`TowerVisionPackedCollator`] turns packs into rows whose `position_ids` restart at 0 for every sample and that
  carry no `attention_mask`: attention then stays inside each sample. `towervision train` runs eager attention
  sample-wise (`training.attention`: each sample's block of scores only, sliding-window layers included);
  transformers' own eager and SDPA paths find the boundaries in `position_ids` (`masking_utils`) and mask the whole
  row; FlashAttention 2 runs varlen on one flattened row. Pixels, `image_sizes`, `batch_num_images` and video frames
  stay in sample order, so the model merges features exactly as unpacked.
"""

import io
import random
from collections.abc import Callable, Iterable, Iterator

import datasets
import numpy as np
import torch
from PIL import Image

from ..data.schema import as_media, decode_error, media_bytes
from ..model.image_processing_towervision import EXIF_ORIENTATION
from ..model.tiling_towervision import video_token_count
from .collator import SKIPPED_KEY, SKIPPED_UNTRAINABLE_KEY, TowerVisionCollator


# Batch entry for the trainer's logs: samples, rows, real tokens, row capacity (rows x max_length) of the batch.
PACKING_KEY = "packing_stats"
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size_from_header(entry) -> tuple[int, int]:
    """`(height, width)` of an image after EXIF orientation, read from the file header (no pixel is decoded)."""
    if isinstance(entry, (np.ndarray, torch.Tensor)):  # HWC or CHW
        return tuple(entry.shape[:2]) if entry.shape[-1] in (1, 3, 4) else tuple(entry.shape[-2:])
    if isinstance(entry, Image.Image):
        image = entry
    else:
        source = entry["path"] if not entry.get("bytes") and entry.get("path") else io.BytesIO(media_bytes(entry))
        image = Image.open(source)
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width


class SampleMeasure:
    r"""
    Length in tokens and vision-tower inputs of a sample-schema row, exactly as [`TowerVisionCollator`] renders it.

    Args:
        processor ([`TowerVisionProcessor`]): the processor the collator uses (chat template, tiling settings).
        num_frames (`int`): frames sampled per video.

    Calling it on a row returns `(tokens, tiles)`: the length of the rendered conversation with every `<image>` /
    `<video>` placeholder expanded, and the tiles (thumbnails included) plus video frames the vision tower encodes.
    Only the text is tokenized; images are measured from their file header and videos from `num_frames`.
    """

    def __init__(self, processor, num_frames: int):
        self.processor = processor
        self.num_frames = num_frames

    def __call__(self, row: dict) -> tuple[int, int]:
        processor = self.processor
        conversation = [
            {"role": turn["role"], "content": [{k: v for k, v in b.items() if v is not None} for b in turn["content"]]}
            for turn in row["messages"]
        ]
        text = processor.apply_chat_template(conversation, tokenize=False)
        tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        images = list(row.get("images") or [])
        layouts = [
            processor.get_image_layout(_image_size(row, index, image), len(images))
            for index, image in enumerate(images)
        ]
        tokens += sum(layout.num_tokens - 1 for layout in layouts)
        tiles = sum(layout.num_tiles for layout in layouts)
        num_videos = len(row.get("videos") or [])
        frame_side = processor.video_processor.size["height"]
        per_video = video_token_count(
            self.num_frames, frame_side, processor.patch_size, processor.video_pool_size, processor.use_image_newline
        )
        return tokens + num_videos * (per_video - 1), tiles + num_videos * self.num_frames


def _image_size(row: dict, index: int, image) -> tuple[int, int]:
    """`image_size_from_header` of a row's image; a missing file, corrupt header or decompression bomb raises a
    `ValueError` naming the row and the image in the words of the unpacked path (the collator and the decoder)."""
    where = f"sample {row.get('id', '?')!r}: images[{index}]"
    try:
        return image_size_from_header(image)
    except OSError as error:  # a missing file, or bytes PIL cannot identify: as the decoder says it
        raise ValueError(f"{where}: {decode_error('decode image', as_media(image), error)}") from error
    except Exception as error:  # e.g. a decompression bomb
        raise ValueError(f"{where}: {type(error).__name__}: {error}") from error


def first_fit_decreasing(
    costs: list[tuple[int, int]], max_length: int, max_row_tiles: int | None = None
) -> list[list[int]]:
    """Indices of `costs` (`(tokens, tiles)` per sample, each at most `max_length` tokens) grouped into rows.

    Samples are placed longest first, each into the first row with room for its tokens and tiles (a sample with more
    tiles than `max_row_tiles` gets a row of its own). Rows are returned in order of creation, each listing its
    samples in their original order. Ties keep the input order, so the result depends on `costs` only.
    """
    rows: list[list] = []  # [indices, tokens, tiles]
    for index in sorted(range(len(costs)), key=lambda i: -costs[i][0]):
        tokens, tiles = costs[index]
        for row in rows:
            if row[1] + tokens <= max_length and (max_row_tiles is None or row[2] + tiles <= max_row_tiles):
                row[0].append(index)
                row[1] += tokens
                row[2] += tiles
                break
        else:
            rows.append([[index], tokens, tiles])
    return [sorted(row[0]) for row in rows]


class Packer:
    r"""
    First-fit-decreasing over consecutive buffers of samples.

    Args:
        measure (`Callable[[dict], tuple[int, int]]`): `(tokens, tiles)` of a row, e.g. a [`SampleMeasure`].
        max_length (`int`): tokens per packed row.
        max_row_tiles (`int`, *optional*): most tiles + video frames per row (bounds vision-tower memory).
        buffer_size (`int`, *optional*, defaults to 1000): samples packed together.
        over_length (`str`, *optional*, defaults to `"skip"`): `"skip"` drops and counts samples over `max_length`,
            `"error"` raises a `ValueError` naming the first one.
    """

    def __init__(
        self,
        measure,
        max_length: int,
        max_row_tiles: int | None = None,
        buffer_size: int = 1000,
        over_length: str = "skip",
    ):
        if max_length is None or max_length < 1:
            raise ValueError(f"packing needs a positive max_length (the tokens of a packed row), got {max_length}")
        self.measure = measure
        self.max_length = max_length
        self.max_row_tiles = max_row_tiles
        self.buffer_size = buffer_size
        self.over_length = over_length

    def samples_per_row(self, rows: Iterable) -> float:
        """Mean samples per pack of `rows` (e.g. the first buffer of a stream, to estimate the steps of an epoch)."""
        packs = [pack for pack, _ in self.pack(rows)]
        return sum(map(len, packs)) / max(1, len(packs))

    def pack(self, items: Iterable, rows: Callable | None = None, rng: random.Random | None = None) -> Iterator:
        """Yield `(items of one pack, samples skipped since the previous pack)`.

        `rows(item)` gives the schema row of an item (default: the item itself). Packs of one buffer come out in a
        random order drawn from `rng` (creation order is longest first), or in creation order without it. Skips
        after the last pack are counted on it.
        """
        skipped, pending = 0, None
        for buffer, buffer_skipped in self._buffers(items, rows):
            skipped += buffer_skipped
            packs = first_fit_decreasing([cost for _, cost in buffer], self.max_length, self.max_row_tiles)
            if rng is not None:
                rng.shuffle(packs)
            for pack in packs:
                if pending is not None:
                    yield pending
                pending, skipped = ([buffer[i][0] for i in pack], skipped), 0
        if pending is not None:
            yield pending[0], pending[1] + skipped

    def _buffers(self, items: Iterable, rows: Callable | None) -> Iterator[tuple[list, int]]:
        """`([(item, (tokens, tiles)), ...], over-length samples skipped while filling it)`, buffer by buffer."""
        buffer, skipped = [], 0
        for item in items:
            row = item if rows is None else rows(item)
            tokens, tiles = self.measure(row)
            if tokens <= self.max_length:
                buffer.append((item, (tokens, tiles)))
            elif self.over_length == "error":
                raise ValueError(
                    f"sample {row.get('id', '?')!r} is {tokens} tokens long, over max_length={self.max_length}; it "
                    "cannot be truncated without cutting image/video tokens. Raise max_length, lower max_tiles / "
                    "num_frames, or set over_length: skip to drop such samples."
                )
            else:
                skipped += 1
            if len(buffer) == self.buffer_size:
                yield buffer, skipped
                buffer, skipped = [], 0
        yield buffer, skipped


def pack_dataset(dataset, packer: Packer, seed: int = 0):
    """The packs of a map-style `datasets.Dataset`, planned once.

    Rows are visited in a permutation drawn from `seed` and packed buffer by buffer (see [`Packer`]). Returns a
    `datasets.Dataset` of packs, `{"packed_rows": [row, ...], SKIPPED_KEY: n}` (`n`: over-length samples skipped
    before this pack), that reads its rows from `dataset` on access; the trainer's sampler shuffles and resumes it
    like any map-style dataset.
    """
    order = np.random.default_rng(seed).permutation(len(dataset)).tolist()
    packs = list(packer.pack(order, rows=dataset.__getitem__, rng=random.Random(seed)))
    plan = datasets.Dataset.from_dict(
        {"indices": [indices for indices, _ in packs], SKIPPED_KEY: [skipped for _, skipped in packs]}
    )

    def read_rows(batch: dict) -> dict:
        rows = [[dataset[i] for i in indices] for indices in batch["indices"]]
        return {"packed_rows": rows, SKIPPED_KEY: batch[SKIPPED_KEY]}

    return plan.with_transform(read_rows)


def pack_stream(dataset, packer: Packer):
    """The packs of a `datasets.IterableDataset` (e.g. a shuffled data recipe), packed buffer by buffer as they arrive.

    Items as [`pack_dataset`]'s. The result is a `datasets.IterableDataset` again: `set_epoch` reshuffles the source,
    DataLoader workers and processes shard it as before, and an epoch always yields the same packs, so a resumed run
    skips exactly the packs it already trained on. Over-length samples of a buffer are counted on its first pack.
    """

    def pack_buffer(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        rng = random.Random("\n".join(str(row.get("id")) for row in rows))  # pack order: fixed by the buffer
        packs = list(packer.pack(rows, rng=rng))  # the batch is one buffer
        return {"packed_rows": [pack for pack, _ in packs], SKIPPED_KEY: [skipped for _, skipped in packs]}

    return dataset.map(pack_buffer, batched=True, batch_size=packer.buffer_size, remove_columns=dataset.column_names)


class TowerVisionPackedCollator(TowerVisionCollator):
    r"""
    Collate packs (items of [`pack_dataset`] / [`pack_stream`]) into packed rows.

    Args:
        processor, num_frames, include_vision_in_every_batch, untrainable: see [`TowerVisionCollator`]; a skipped
            sample leaves its pack (a pack left empty is no row), and a batch left empty is one masked token.
        max_length (`int`): tokens per packed row (the packer's `max_length`).
        flatten (`bool`, *optional*, defaults to `False`):
            Concatenate the whole batch into a single row: FlashAttention 2 only finds samples in `position_ids` of
            a batch of one row. Eager attention keeps one row per pack.

    Returns `input_ids`, `position_ids` (restarting at 0 for every sample; the padding after a row's last sample is
    a sample of its own) and `labels` of shape `(rows, longest row)`, no `attention_mask`; the pixel inputs of every
    sample in sample order; `SKIPPED_KEY`, `SKIPPED_UNTRAINABLE_KEY` (with `untrainable="skip"`) and `PACKING_KEY`
    for the trainer's logs. Labels cover assistant turns
    only, and the first token of every sample is never a target, so no prediction crosses a sample boundary.
    """

    def __init__(
        self,
        processor,
        max_length: int,
        num_frames: int | None = None,
        include_vision_in_every_batch: bool = False,
        flatten: bool = False,
        untrainable: str = "error",
    ):
        super().__init__(
            processor,
            max_length=max_length,
            num_frames=num_frames,
            include_vision_in_every_batch=include_vision_in_every_batch,
            untrainable=untrainable,
        )
        self.flatten = flatten
        self.pad_token_id = processor.tokenizer.pad_token_id

    def __call__(self, packs: list[dict]) -> dict:
        rows, conversations, sizes, num_untrainable = [], [], [], 0
        for pack in packs:  # untrainable samples raise, or leave their pack (`untrainable="skip"`)
            kept, kept_conversations, dropped = self._trainable_conversations(pack["packed_rows"])
            rows += kept
            conversations += kept_conversations
            sizes += [len(kept)] if kept else []
            num_untrainable += dropped
        packed_rows = len(sizes)
        has_media = any(row.get("images") or row.get("videos") for row in rows)
        with_blank = self.include_vision_in_every_batch and not has_media
        if with_blank:  # a masked blank-image sample in a row of its own: every rank runs the vision tower
            conversations.append(self._blank_conversation())
            sizes.append(1)
        if conversations:
            batch = dict(self._process(conversations))
        else:  # every sample was untrainable: one masked token keeps the step well-formed
            batch, sizes = self._filler_batch(), [1]
        lengths = batch.pop("attention_mask").sum(dim=1).tolist()
        labels = batch["input_ids"].masked_fill(torch.as_tensor(batch.pop("assistant_masks")) == 0, -100)
        if self.media_token_ids:
            labels[torch.isin(batch["input_ids"], torch.tensor(self.media_token_ids))] = -100
        labels[:, 0] = -100  # a sample's first token is never the target of the previous sample's last one
        if with_blank:
            labels[-1] = -100
        input_ids, position_ids, row_labels, start = [], [], [], 0
        for size in sizes:
            samples = range(start, start + size)
            start += size
            if sum(lengths[i] for i in samples) > self.max_length and not (with_blank and size == 1):
                ids = [rows[i].get("id", i) for i in samples]
                raise ValueError(
                    f"samples {ids} take {[lengths[i] for i in samples]} tokens, over max_length={self.max_length}: "
                    "they were measured with other processor settings than they are rendered with"
                )
            input_ids.append(torch.cat([batch["input_ids"][i, : lengths[i]] for i in samples]))
            position_ids.append(torch.cat([torch.arange(lengths[i]) for i in samples]))
            row_labels.append(torch.cat([labels[i, : lengths[i]] for i in samples]))
        if self.flatten:
            input_ids, position_ids = [torch.cat(input_ids)], [torch.cat(position_ids)]
            row_labels = [torch.cat(row_labels)]
        width = max(len(ids) for ids in input_ids)
        for index, ids in enumerate(input_ids):  # right padding: a masked sample of its own, positions from 0
            padding = width - len(ids)
            input_ids[index] = torch.cat([ids, torch.full((padding,), self.pad_token_id, dtype=ids.dtype)])
            position_ids[index] = torch.cat([position_ids[index], torch.arange(padding)])
            row_labels[index] = torch.cat([row_labels[index], torch.full((padding,), -100, dtype=ids.dtype)])
        batch["input_ids"] = torch.stack(input_ids)
        batch["position_ids"] = torch.stack(position_ids)
        batch["labels"] = torch.stack(row_labels)
        real_tokens = sum(lengths[: len(rows)])
        batch[SKIPPED_KEY] = torch.tensor(sum(pack[SKIPPED_KEY] for pack in packs))
        if self.untrainable == "skip":
            batch[SKIPPED_UNTRAINABLE_KEY] = torch.tensor(num_untrainable)
        batch[PACKING_KEY] = torch.tensor([len(rows), packed_rows, real_tokens, packed_rows * self.max_length])
        return batch
