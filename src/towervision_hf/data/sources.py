"""Source adapters: each turns one source's real records into schema rows (schema.py).

An adapter reads records (`records()`) and converts one record (`convert()`), raising `RowError(reason)` for a row
it cannot use; `iter_samples` drives it, validates, filters languages, resolves media and counts every outcome in a
`BuildReport`. A source whose columns are not what the adapter expects fails at load time with a `SchemaError`
naming the expected and the found columns.

Adapters (recipe `adapter:` name -> class): pixmo_cap, pixmo_qa, pixmo_docs, pixmo_count, cauldron, vqa, llava,
cultural_ground, chat, llava_video, visionblocks, local, sample.
"""

import inspect
import io
import json
import os
import random
import re
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from PIL import Image

from .fetch import FetchError
from .jsonl import MALFORMED_KEY, data_files_in, read_jsonl
from .languages import normalize_language
from .prompts import caption_prompt
from .schema import COLUMNS, image_block, make_sample, media, message, text_block, validate_sample, video_block


class RowError(ValueError):
    """A record the adapter cannot turn into a row; `reason` is one of report.SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class SchemaError(ValueError):
    """A whole source does not have the columns its adapter expects."""


def check_columns(source: str, location: str, found, required: tuple[tuple[str, ...], ...]) -> None:
    """`required` is a tuple of alternatives: at least one column of every group must be in `found`."""
    found = list(found)
    missing = [group for group in required if not any(column in found for column in group)]
    if missing:
        expected = ", ".join(" or ".join(group) for group in required)
        raise SchemaError(
            f"source {source!r} ({location}): expected columns [{expected}], found {sorted(found)}; missing "
            f"{[' or '.join(group) for group in missing]}. The adapter was written against the documented schema; "
            f"check the source's dataset card and the adapter's params (column names can be set in the recipe)."
        )


_TABLE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def open_table(path: str, name: str | None = None, split: str = "train", data_files=None, streaming: bool = False):
    """A `datasets` (Iterable)Dataset for a Hub id or local files, with image/video columns left undecoded.

    Local files are always streamed (no cache copy); a folder of our tools' `data*.jsonl` files reads those only (not
    their `report.json`); a folder written by `save_to_disk` (a `Dataset`, or the split `split` of a `DatasetDict`)
    is loaded from disk.
    """
    from datasets import Image as ImageFeature
    from datasets import List, load_dataset

    from .loading import load_split, source_kind

    local = Path(path)
    if local.exists():
        if source_kind(path) == "save_to_disk":
            dataset = load_split(path, split)
        else:
            # a folder written by our tools: its data*.jsonl files (not its report.json); else every table file
            files = (
                [local]
                if local.is_file()
                else data_files_in(local) or sorted(f for f in local.rglob("*") if f.suffix in _TABLE_BUILDERS)
            )
            builders = {_TABLE_BUILDERS.get(f.suffix) for f in files}
            if len(builders) != 1 or None in builders:
                raise SchemaError(
                    f"{path}: expected files of one format among {sorted(_TABLE_BUILDERS)}, found {files[:5]}"
                )
            dataset = load_dataset(builders.pop(), data_files=[str(f) for f in files], split="train", streaming=True)
    else:
        dataset = load_dataset(path, name, split=split, data_files=data_files, streaming=streaming)
    for column, feature in (dataset.features or {}).items():
        if isinstance(feature, ImageFeature):
            dataset = dataset.cast_column(column, ImageFeature(decode=False))
        elif isinstance(feature, List) and isinstance(feature.feature, ImageFeature):  # a list of images per row
            dataset = dataset.cast_column(column, List(ImageFeature(decode=False)))
    return dataset


def _local_json_file(path: str) -> Path:
    """A local LLaVA-style JSON file, downloading `hf://datasets/<owner>/<name>/<file>` through huggingface_hub."""
    if path.startswith("hf://datasets/"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = path.removeprefix("hf://datasets/").split("/", 2)
        return Path(hf_hub_download(f"{owner}/{repo}", filename, repo_type="dataset"))
    return Path(path)


def read_json_records(path: str, pattern: str = "*.json*"):
    """Records of a LLaVA-style `.json` (one array) or `.jsonl` file, or of every file matching `pattern` in a folder
    (recursively, sorted)."""
    path = _local_json_file(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob(pattern) if f.suffix in (".json", ".jsonl"))
        if not files:
            raise SchemaError(f"{path}: no .json/.jsonl file matches {pattern!r}")
    else:
        files = [path]
    for file in files:
        if file.suffix == ".jsonl":
            yield from read_jsonl(file, resolve_media=False)
            continue
        with open(file, encoding="utf-8") as handle:
            records = json.load(handle)
        if not isinstance(records, list):
            raise SchemaError(f"{file}: expected a JSON array of records, found a JSON {type(records).__name__}")
        for record in records:
            if not isinstance(record, dict):
                record = {MALFORMED_KEY: f"a JSON {type(record).__name__}, not an object"}
            yield record


def _is_json_path(path: str) -> bool:
    local = Path(path)
    if path.startswith("hf://datasets/") or local.suffix in (".json", ".jsonl"):
        return True
    return local.is_dir() and not (local / "state.json").exists() and any(local.rglob("*.json*"))


def _media_from_feature(value) -> dict:
    """A `datasets.Image(decode=False)` value ({bytes, path}), a path string or raw bytes -> a media entry."""
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return media(bytes=value.get("bytes"), path=value.get("path"))
    if isinstance(value, (bytes, bytearray)):
        return media(bytes=bytes(value))
    if isinstance(value, str) and value:
        return media(url=value) if value.startswith(("http://", "https://")) else media(path=value)
    raise RowError("missing_media", f"image value {value!r:.80} is not bytes, a path or a URL")


_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}
_PLACEHOLDER = re.compile(r"<image>|<video>")


def _turns(conversation) -> list[tuple[str, str]]:
    """(role, text) pairs of a LLaVA (`from`/`value`) or chat (`role`/`content`) conversation."""
    if not isinstance(conversation, list):
        raise RowError("malformed", f"conversation is {type(conversation).__name__}, expected a list of turns")
    turns = []
    for turn in conversation:
        if not isinstance(turn, dict):
            raise RowError("malformed", f"turn {turn!r:.80} is not an object")
        role, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if role not in _ROLES or not isinstance(text, str):
            raise RowError("malformed", f"turn has role {role!r} and {type(text).__name__} content")
        turns.append((_ROLES[role], text))
    return turns


def conversation_messages(conversation, media_kind: str | None = None, media_count: int = 0) -> list[dict]:
    """Schema messages from a LLaVA/chat conversation; `<image>`/`<video>` placeholders become `media_kind` blocks.

    Both placeholder spellings mean "the next medium" (LLaVA-Video uses either). Without placeholders, the media
    blocks open the first user turn (the LLaVA convention). Empty turns are dropped.
    """
    messages, placeholders = [], 0
    for role, text in _turns(conversation):
        blocks = []
        for index, piece in enumerate(_PLACEHOLDER.split(text)):
            if index > 0:
                if role != "user" or media_kind is None:
                    raise RowError("placeholder_mismatch", f"a media placeholder in a {role} turn")
                blocks.append(image_block() if media_kind == "image" else video_block())
                placeholders += 1
            if piece.strip():
                blocks.append(text_block(piece.strip()))
        if blocks:
            messages.append({"role": role, "content": blocks})
    if placeholders == 0 and media_count:
        first_user = next((turn for turn in messages if turn["role"] == "user"), None)
        if first_user is None:
            raise RowError("empty_conversation", "no user turn to attach the media to")
        block = image_block if media_kind == "image" else video_block
        first_user["content"][:0] = [block() for _ in range(media_count)]
    elif placeholders != media_count:
        raise RowError("placeholder_mismatch", f"{placeholders} placeholders for {media_count} {media_kind}s")
    if not {"user", "assistant"} <= {turn["role"] for turn in messages}:
        raise RowError("empty_conversation", f"roles {[turn['role'] for turn in messages]}")
    return messages


_DIALOGUE_MARKERS = re.compile(r"\[(USER|ASSISTANT)\]\s*")


def qa_messages(question: str, answer: str, media_blocks: list[dict]) -> list[dict]:
    """A one- or multi-turn QA; `[USER] ... [ASSISTANT] ...` markers in `question` (PixMo style) become earlier
    turns."""
    if not isinstance(question, str) or not isinstance(answer, str) or not question.strip() or not answer.strip():
        raise RowError("empty_conversation", "empty question or answer")
    pieces = _DIALOGUE_MARKERS.split(question)
    turns = [("user", pieces[0])] if pieces[0].strip() else []
    turns += [("user" if marker == "USER" else "assistant", text) for marker, text in zip(pieces[1::2], pieces[2::2])]
    turns.append(("assistant", answer))
    messages = []
    for role, text in turns:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].append(text_block(text.strip()))
        elif text.strip():
            messages.append(message(role, text.strip()))
    if messages[0]["role"] != "user":
        raise RowError("malformed", "the dialogue does not start with the user")
    messages[0]["content"][:0] = media_blocks
    return messages


class Adapter:
    """Base adapter. Subclasses set `required_columns` and implement `records()` (an iterator of raw records) and
    `convert(record, index) -> row` (raising `RowError` for a record they cannot use)."""

    required_columns: tuple[tuple[str, ...], ...] = ()

    def __init__(self, name: str, *, seed: int = 0, streaming: bool = False, language_map: dict | None = None):
        self.name, self.seed, self.streaming = name, seed, streaming
        self.language_map = {str(key).lower(): value for key, value in (language_map or {}).items()}

    def image_checksums(self, record: dict) -> list | None:
        """Expected SHA-256 per image URL, when the source publishes them."""
        return None

    def rng(self, index: int) -> random.Random:
        """A per-record RNG: draws do not depend on which other records were read or skipped."""
        return random.Random(f"{self.seed}:{self.name}:{index}")

    def language(self, value) -> str:
        if value is None or value == "":
            raise RowError("unknown_language", "no language given")
        value = self.language_map.get(str(value).lower(), value)
        try:
            return normalize_language(value)
        except ValueError as error:
            raise RowError("unknown_language", str(error)) from None

    def table_records(self, path, name=None, split="train", data_files=None):
        """Records of a `datasets` table, after checking its columns (from the features, else the first record)."""
        dataset = open_table(path, name=name, split=split, data_files=data_files, streaming=self.streaming)
        columns = dataset.column_names
        if columns is not None:
            check_columns(self.name, path, columns, self.required_columns)
        for index, record in enumerate(dataset):
            if index == 0 and columns is None:
                check_columns(self.name, path, record, self.required_columns)
            yield record

    def json_records(self, path, pattern: str = "*.json*"):
        for index, record in enumerate(read_json_records(path, pattern)):
            if index == 0 and MALFORMED_KEY not in record:
                check_columns(self.name, path, record, self.required_columns)
            yield record


class PixmoCap(Adapter):
    """`allenai/pixmo-cap` (`image_url`, `caption`, `transcripts`) or its mirror with an embedded `image` column.

    Each row: an English caption prompt (seeded draw from prompts.CAPTION_PROMPTS) -> the caption.
    """

    def __init__(
        self,
        name,
        *,
        path="allenai/pixmo-cap",
        config=None,
        split="train",
        data_files=None,
        caption_column="caption",
        url_column="image_url",
        image_column="image",
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.path, self.config, self.split, self.data_files = path, config, split, data_files
        self.caption_column, self.url_column, self.image_column = caption_column, url_column, image_column
        self.required_columns = ((caption_column,), (image_column, url_column))

    def records(self):
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def image_media(self, record) -> dict:
        if record.get(self.image_column):
            return _media_from_feature(record[self.image_column])
        url = record.get(self.url_column)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RowError("missing_media", f"no image and no URL ({url!r:.80})")
        return media(url=url)

    def convert(self, record, index):
        caption = record.get(self.caption_column)
        if not isinstance(caption, str) or not caption.strip():
            raise RowError("empty_conversation", "empty caption")
        prompt = caption_prompt("en", self.rng(index))
        messages = [message("user", image_block(), prompt), message("assistant", caption.strip())]
        return make_sample(index, self.name, "en", messages, images=[self.image_media(record)])


class PixmoQA(PixmoCap):
    """PixMo QA subsets with one image URL and a Q/A pair per row: `allenai/pixmo-ask-model-anything`
    (`image_url`, `image_sha256`, `question`, `answer`) and `allenai/pixmo-cap-qa` (`image_url`, `question`,
    `answer`, with `[USER]`/`[ASSISTANT]` turns inside `question` when present). Hashes are checked when given."""

    def __init__(
        self,
        name,
        *,
        path="allenai/pixmo-ask-model-anything",
        question_column="question",
        answer_column="answer",
        sha_column="image_sha256",
        **kwargs,
    ):
        super().__init__(name, path=path, **kwargs)
        self.question_column, self.answer_column, self.sha_column = question_column, answer_column, sha_column
        self.required_columns = ((question_column,), (answer_column,), (self.image_column, self.url_column))

    def image_checksums(self, record):
        checksum = record.get(self.sha_column)
        return [checksum] if checksum and not record.get(self.image_column) else None

    def convert(self, record, index):
        messages = qa_messages(record.get(self.question_column), record.get(self.answer_column), [image_block()])
        return make_sample(index, self.name, "en", messages, images=[self.image_media(record)])


class PixmoDocs(Adapter):
    """`allenai/pixmo-docs` (configs charts / tables / diagrams / other): an embedded `image`, an `image_id` and
    `questions` holding parallel `question` / `answer` lists (or a list of {question, answer}); all pairs of an image
    become one multi-turn conversation."""

    def __init__(self, name, *, path="allenai/pixmo-docs", config="charts", split="train", data_files=None, **kwargs):
        super().__init__(name, **kwargs)
        self.path, self.config, self.split, self.data_files = path, config, split, data_files
        self.required_columns = (("image",), ("questions",))

    def records(self):
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def convert(self, record, index):
        questions = record.get("questions")
        if isinstance(questions, dict):
            pairs = list(zip(questions.get("question") or [], questions.get("answer") or []))
        elif isinstance(questions, list):
            pairs = [(pair.get("question"), pair.get("answer")) for pair in questions if isinstance(pair, dict)]
        else:
            raise RowError("malformed", f"questions is {type(questions).__name__}")
        messages = []
        for question, answer in pairs:
            if isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip():
                messages += [message("user", question.strip()), message("assistant", answer.strip())]
        if not messages:
            raise RowError("empty_conversation", "no non-empty question/answer pair")
        messages[0]["content"].insert(0, image_block())
        row_id = record.get("image_id") or index
        return make_sample(row_id, self.name, "en", messages, images=[_media_from_feature(record.get("image"))])


class PixmoCount(PixmoQA):
    """`allenai/pixmo-count` (`image_url`, `image_sha256`, `label`, `count`): one counting question per image,
    "How many {label} are there?" -> the count (the question wording is ours; the paper does not print it)."""

    def __init__(self, name, *, path="allenai/pixmo-count", label_column="label", count_column="count", **kwargs):
        super().__init__(name, path=path, **kwargs)
        self.label_column, self.count_column = label_column, count_column
        self.required_columns = ((label_column,), (count_column,), (self.image_column, self.url_column))

    def convert(self, record, index):
        label, count = record.get(self.label_column), record.get(self.count_column)
        if not isinstance(label, str) or not label.strip() or not isinstance(count, int) or isinstance(count, bool):
            raise RowError("malformed", f"label {label!r:.40} and count {count!r:.20}")
        messages = qa_messages(f"How many {label.strip()} are there?", str(count), [image_block()])
        return make_sample(index, self.name, "en", messages, images=[self.image_media(record)])


class Cauldron(Adapter):
    """One subset of `HuggingFaceM4/the_cauldron` (`subset`: ai2d, aokvqa, chartqa, docvqa, dvqa, iconqa,
    infographic_vqa, okvqa, plotqa, scienceqa, st_vqa, tabmwp, tallyqa, textvqa, vqav2, ...): `images` (a list of
    images) and `texts` (a list of {user, assistant}); all pairs of a record become one multi-turn conversation with
    the images opening the first user turn. English."""

    def __init__(self, name, *, subset, path="HuggingFaceM4/the_cauldron", split="train", data_files=None, **kwargs):
        super().__init__(name, **kwargs)
        self.path, self.subset, self.split, self.data_files = path, subset, split, data_files
        self.required_columns = (("images",), ("texts",))

    def records(self):
        return self.table_records(self.path, self.subset, self.split, self.data_files)

    def convert(self, record, index):
        texts, images = record.get("texts"), record.get("images")
        if not isinstance(texts, list) or not isinstance(images, list) or not images:
            raise RowError("malformed", f"texts is {type(texts).__name__}, images is {type(images).__name__}")
        messages = []
        for pair in texts:
            user, assistant = (pair.get("user"), pair.get("assistant")) if isinstance(pair, dict) else (None, None)
            if isinstance(user, str) and isinstance(assistant, str) and user.strip() and assistant.strip():
                messages += [message("user", user.strip()), message("assistant", assistant.strip())]
        if not messages:
            raise RowError("empty_conversation", "no non-empty user/assistant pair")
        messages[0]["content"][:0] = [image_block() for _ in images]
        return make_sample(index, self.name, "en", messages, images=[_media_from_feature(image) for image in images])


class VQA(Adapter):
    """VQAv2-style tables: an image column, a question and an answer (a string, or a list of answers / of
    {answer: ...} dicts whose most frequent value is used). Defaults fit `HuggingFaceM4/VQAv2`."""

    def __init__(
        self,
        name,
        *,
        path,
        config=None,
        split="train",
        data_files=None,
        image_column="image",
        question_column="question",
        answer_column="multiple_choice_answer",
        id_column="question_id",
        language="en",
        language_column=None,
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.path, self.config, self.split, self.data_files = path, config, split, data_files
        self.image_column, self.question_column, self.answer_column = image_column, question_column, answer_column
        self.id_column, self.fixed_language, self.language_column = id_column, language, language_column
        self.required_columns = ((image_column,), (question_column,), (answer_column,))

    def records(self):
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def convert(self, record, index):
        answer = record.get(self.answer_column)
        if isinstance(answer, list):
            values = [value.get("answer") if isinstance(value, dict) else value for value in answer]
            values = [value for value in values if isinstance(value, str) and value.strip()]
            answer = Counter(values).most_common(1)[0][0] if values else None
        language = self.language(record.get(self.language_column) if self.language_column else self.fixed_language)
        messages = qa_messages(record.get(self.question_column), answer, [image_block()])
        row_id = record.get(self.id_column, index)
        image = _media_from_feature(record.get(self.image_column))
        return make_sample(row_id, self.name, language, messages, images=[image])


class LLaVA(Adapter):
    """LLaVA conversation JSON (`id`, `image`: a path or a list of paths relative to `image_root`, or absent for
    text-only rows, `conversations`: [{from: human|gpt, value}]). Used for PangeaIns folders (cultural/, multi/,
    general/ ...) and the chart / doc / OCR instruction sets. The language comes from `language_field` in each
    record, else the fixed `language`. `path` may be a folder: every file matching `pattern` is read. PangeaIns key
    names are unconfirmed: the first record is checked."""

    media_kind, media_field = "image", "image"

    def __init__(
        self, name, *, path, image_root=None, pattern="*.json*", language=None, language_field="language", **kwargs
    ):
        super().__init__(name, **kwargs)
        self.path, self.pattern, self.root = path, pattern, Path(image_root) if image_root else None
        self.fixed_language, self.language_field = language, language_field
        self.required_columns = (("conversations",),)

    def records(self):
        return self.json_records(self.path, self.pattern)

    def media_entries(self, record) -> list[dict]:
        value = record.get(self.media_field)
        paths = [value] if isinstance(value, str) else value or []
        if not isinstance(paths, list) or not all(isinstance(path, str) and path for path in paths):
            raise RowError("malformed", f"{self.media_field} is {value!r:.80}")
        return [media(path=str(self.root / path) if self.root else path) for path in paths]

    def convert(self, record, index):
        entries = self.media_entries(record)
        messages = conversation_messages(record.get("conversations"), self.media_kind, len(entries))
        language = self.language(record.get(self.language_field) or self.fixed_language)
        row_id = record.get("id", index)
        if self.media_kind == "image":
            return make_sample(row_id, self.name, language, messages, images=entries)
        return make_sample(row_id, self.name, language, messages, videos=entries)


class LLaVAVideo(LLaVA):
    """`lmms-lab/LLaVA-Video-178K` JSON (`id`, `conversations`, `data_source`, `video` relative to `video_root`,
    the untarred archives). `task` (caption / open_ended / multi_choice) only names the split. English."""

    media_kind, media_field = "video", "video"

    def __init__(self, name, *, path, video_root=None, task="caption", language="en", **kwargs):
        super().__init__(name, path=path, image_root=video_root, language=language, **kwargs)
        if task not in ("caption", "open_ended", "multi_choice"):
            raise ValueError(f"source {name!r}: task {task!r} is not caption, open_ended or multi_choice")
        self.task = task
        self.required_columns = (("conversations",), ("video",))


class CulturalGround(LLaVA):
    """`neulab/CulturalGround` open-ended (OE) or multiple-choice (MCQ) VQA. Two layouts are read: the card's
    viewer sample (`id`, `image`, `text`, `language`, with `text` a JSON conversation) and LLaVA-style JSON records
    (`conversations`, `image` under `image_root`, `language`). The full data layout is unconfirmed: the first
    record is checked and rows whose `text` is not a conversation are counted as malformed."""

    def __init__(
        self, name, *, path="neulab/CulturalGround", kind="oe", config=None, split="train", data_files=None, **kwargs
    ):
        super().__init__(name, path=path, **kwargs)
        if kind not in ("oe", "mcq"):
            raise ValueError(f"source {name!r}: kind {kind!r} is not oe or mcq")
        self.kind, self.config, self.split, self.data_files = kind, config, split, data_files
        self.required_columns = (("conversations", "text"), ("image",))

    def records(self):
        if _is_json_path(self.path):
            return self.json_records(self.path, self.pattern)
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def convert(self, record, index):
        if "conversations" in record or isinstance(record.get("image"), (str, list)):
            return super().convert(record, index)
        try:
            conversation = json.loads(record.get("text") or "")
        except json.JSONDecodeError:
            raise RowError("malformed", f"text {record.get('text')!r:.80} is not a JSON conversation") from None
        messages = conversation_messages(conversation, "image", 1)
        language = self.language(record.get(self.language_field) or self.fixed_language)
        return make_sample(
            record.get("id", index), self.name, language, messages, images=[_media_from_feature(record.get("image"))]
        )


class Chat(Adapter):
    """Text-only chat data such as EuroBlocks (`utter-project/EuroBlocks-SFT-Synthetic-1124`, schema unconfirmed):
    a `messages` or `conversations` column of role/content or from/value turns, and a language column or a fixed
    `language`."""

    def __init__(
        self,
        name,
        *,
        path="utter-project/EuroBlocks-SFT-Synthetic-1124",
        config=None,
        split="train",
        data_files=None,
        language=None,
        language_column="language",
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.path, self.config, self.split, self.data_files = path, config, split, data_files
        self.fixed_language, self.language_column = language, language_column
        self.required_columns = (("messages", "conversations"),)

    def records(self):
        if _is_json_path(self.path):
            return self.json_records(self.path)
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def convert(self, record, index):
        conversation = record["messages"] if "messages" in record else record.get("conversations")
        messages = conversation_messages(conversation)
        language = self.language(record.get(self.language_column) or self.fixed_language)
        return make_sample(record.get("id", index), self.name, language, messages)


class VisionBlocks(Adapter):
    """The released `utter-project/VisionBlocks` (schema unconfirmed). Accepted layouts, checked at load time:
    this package's schema (passed through) or LLaVA-style `conversations` with an `image` / `images` column of
    embedded images and a `language` column."""

    def __init__(
        self,
        name,
        *,
        path="utter-project/VisionBlocks",
        config=None,
        split="train",
        data_files=None,
        language=None,
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.path, self.config, self.split, self.data_files = path, config, split, data_files
        self.fixed_language = language
        self.required_columns = (("messages", "conversations"),) + ((("language",),) if language is None else ())

    def records(self):
        return self.table_records(self.path, self.config, self.split, self.data_files)

    def convert(self, record, index):
        language = self.language(record.get("language") or self.fixed_language)
        if all(column in record for column in COLUMNS):
            return make_sample(
                record["id"], self.name, language, record["messages"], record["images"], record["videos"]
            )
        images = record.get("images", record.get("image"))
        images = [] if images is None else images if isinstance(images, list) else [images]
        entries = [_media_from_feature(image) for image in images]
        messages = conversation_messages(record.get("conversations"), "image", len(entries))
        return make_sample(record.get("id", index), self.name, language, messages, images=entries)


class Local(Adapter):
    """Rows already in this package's schema, from a `.jsonl` file or a folder of `data*.jsonl` files
    (jsonl.py). Extra keys (translation bookkeeping) are dropped; the language is normalised. `translated` selects
    a part of a `data translate` output: true reads only the translated rows, false only the rows kept as they were
    (the English half of `--keep-english 0.5`), null (default) all of them."""

    required_columns = tuple((column,) for column in ("messages", "language"))

    def __init__(self, name, *, path, translated: bool | None = None, **kwargs):
        super().__init__(name, **kwargs)
        if translated not in (None, True, False):
            raise ValueError(f"source {name!r}: translated must be true, false or null, got {translated!r}")
        self.path, self.translated = path, translated

    def records(self):
        for index, record in enumerate(read_jsonl(self.path)):
            if index == 0 and MALFORMED_KEY not in record:
                check_columns(self.name, str(self.path), record, self.required_columns)
            selected = self.translated is None or bool(record.get("translation")) == self.translated
            if selected or MALFORMED_KEY in record:
                yield record

    def convert(self, record, index):
        if not isinstance(record.get("messages"), list) or not record["messages"]:
            raise RowError("empty_conversation", "no messages")
        language = self.language(record.get("language"))
        return make_sample(
            record.get("id", index),
            self.name,
            language,
            record["messages"],
            record.get("images") or [],
            record.get("videos") or [],
        )


def sample_dir() -> Path:
    """The embedded sample shipped as package data."""
    return Path(str(resources.files("towervision_hf") / "sample"))


class Sample(Local):
    """A stage of the embedded sample shipped in `towervision_hf/sample/` (see data/sample.py)."""

    def __init__(self, name, *, stage, **kwargs):
        super().__init__(name, path=sample_dir() / f"stage{int(stage)}", **kwargs)


ADAPTERS = {
    "pixmo_cap": PixmoCap,
    "pixmo_qa": PixmoQA,
    "pixmo_docs": PixmoDocs,
    "pixmo_count": PixmoCount,
    "cauldron": Cauldron,
    "vqa": VQA,
    "llava": LLaVA,
    "cultural_ground": CulturalGround,
    "chat": Chat,
    "llava_video": LLaVAVideo,
    "visionblocks": VisionBlocks,
    "local": Local,
    "sample": Sample,
}


def check_adapter_params(adapter: str, name: str, params) -> None:
    """ValueError naming source `name` for an unknown adapter or a param the adapter does not take."""
    if adapter not in ADAPTERS:
        raise ValueError(f"source {name!r}: unknown adapter {adapter!r}; known: {sorted(ADAPTERS)}")
    accepted = set()
    for klass in ADAPTERS[adapter].__mro__:
        if "__init__" in vars(klass):
            accepted |= {
                p.name for p in inspect.signature(klass.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
            }
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"source {name!r}: adapter {adapter!r} has no params {unknown}; accepted: {sorted(accepted)}")


def make_adapter(adapter: str, name: str, /, **params) -> Adapter:
    """Instantiate the adapter named `adapter` for source `name`, with a clear error for unknown names or params."""
    check_adapter_params(adapter, name, params)
    return ADAPTERS[adapter](name, **params)


def _ordered_map(function, items, workers: int):
    """`map(function, items)` on `workers` threads, in order, with a bounded number of items in flight."""
    if workers <= 1:
        yield from map(function, items)
        return
    pool, pending = ThreadPoolExecutor(workers), deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_image(data: bytes) -> None:
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception as error:  # PIL raises many types for corrupt data
        raise RowError("undecodable_media", f"{type(error).__name__}: {error}") from None


def resolve_media(sample: dict, checksums=None, fetcher=None, embed_local: bool = False) -> dict:
    """Fetch URL images into bytes (with `fetcher`), check local files exist and optionally embed them."""
    for column in ("images", "videos"):
        for position, entry in enumerate(sample[column]):
            if entry["bytes"]:
                continue
            if entry["url"] and fetcher is not None:
                checksum = checksums[position] if checksums and column == "images" else None
                try:
                    entry["bytes"] = fetcher.fetch(entry["url"], checksum)
                except FetchError as error:
                    raise RowError(error.reason, str(error)) from None
                if column == "images":
                    _check_image(entry["bytes"])
            elif entry["path"] and not entry["url"]:
                if not os.path.isfile(entry["path"]):
                    raise RowError("missing_media", f"{entry['path']} does not exist")
                if embed_local:
                    with open(entry["path"], "rb") as handle:
                        entry["bytes"] = handle.read()
    return sample


def iter_samples(
    adapter: Adapter,
    report,
    languages=None,
    fetcher=None,
    embed_local: bool = False,
    max_samples: int | None = None,
    workers: int = 8,
):
    """Valid rows of one source, counting every record read in `report` (kept, or skipped with its reason).

    `languages` restricts the rows kept (others are counted as `language_not_selected`), `fetcher` resolves image
    URLs (None leaves URLs in place), `max_samples` stops after that many rows kept.
    """
    report.add_source(adapter.name)
    if max_samples is not None and max_samples <= 0:
        return

    def candidates():
        for index, record in enumerate(adapter.records()):
            try:
                if MALFORMED_KEY in record:
                    raise RowError("malformed", record[MALFORMED_KEY])
                sample = adapter.convert(record, index)
                problems = validate_sample(sample)
                if problems:
                    raise RowError("invalid_sample", "; ".join(problems))
                if languages is not None and sample["language"] not in languages:
                    raise RowError("language_not_selected", sample["language"])
                yield index, sample, adapter.image_checksums(record)
            except RowError as error:
                yield index, error, None
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                yield index, RowError("malformed", f"{type(error).__name__}: {error}"), None

    def resolve(candidate):
        index, sample, checksums = candidate
        if isinstance(sample, RowError):
            return candidate
        try:
            return index, resolve_media(sample, checksums, fetcher, embed_local), None
        except RowError as error:
            return index, error, None

    kept = 0
    for index, sample, _ in _ordered_map(resolve, candidates(), workers if fetcher is not None else 1):
        if isinstance(sample, RowError):
            report.skip(adapter.name, sample.reason, sample.detail, index)
            continue
        report.keep(adapter.name, sample["language"])
        yield sample
        kept += 1
        if max_samples is not None and kept >= max_samples:
            return
