"""Tiny models and benchmark fixtures (real column layouts, generated images / videos) for the evaluation tests.

`build_tiny_model_and_processor` is TowerVision itself; `build_native_llava_onevision` is transformers' own
LlavaOnevision at toy size, used to show that the scoring API relies only on the generic processor / model
interface.
"""

import json
import os

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for block in message['content'] %}"
    "{% if block['type'] == 'image' %}<image>{% elif block['type'] == 'video' %}<video>"
    "{% elif block['type'] == 'text' %}{{ block['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_tiny_model_and_processor():
    """TowerVision at toy size (`towervision init --tiny`), seeded random weights."""
    from towervision_hf.checkpoint.compose import build_tiny

    model, processor = build_tiny()
    return model.eval(), processor


def build_native_llava_onevision():
    """transformers' native LlavaOnevision with the tiny TowerVision sub-configs, the offline Gemma tokenizer and a
    Gemma-turn template."""
    import torch
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    from towervision_hf.checkpoint.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = GEMMA_TEMPLATE
    tiny = tiny_config(tokenizer)
    size = tiny.tile_size
    common = {"size": {"height": size, "width": size}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=tiny.image_grid_pinpoints, **common),
        video_processor=LlavaOnevisionVideoProcessor(do_sample_frames=True, num_frames=tiny.num_frames, **common),
        tokenizer=tokenizer,
        num_image_tokens=tiny.patches_per_side**2,
        vision_feature_select_strategy="full",
        chat_template=GEMMA_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )
    config = LlavaOnevisionConfig(
        vision_config=tiny.vision_config,
        text_config=tiny.text_config,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=tiny.image_grid_pinpoints,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration._from_config(config, attn_implementation="eager").eval()
    return model, processor


def save_tiny_model(directory) -> str:
    model, processor = build_tiny_model_and_processor()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


def random_image(seed: int, size=(40, 30)) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png(seed: int, size=(40, 30)) -> dict:
    import io

    buffer = io.BytesIO()
    random_image(seed, size).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


CORRUPT_IMAGE = {"bytes": b"this is not an image", "path": None}


def _write_split(rows: list[dict], features: Features, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(path)


def write_commute(directory) -> str:
    """`Unbabel/commute_multimodal_mt` layout: one parquet shard per target-language split."""
    features = Features(
        {
            "image": Image(),
            "image_name": Value("string"),
            "source": Value("string"),
            "correct_translation": Value("string"),
            "incorrect_translation": Value("string"),
        }
    )
    translations = {
        "de": [("He finally made it to the bank.", "Er schaffte es zur Bank.", "Er schaffte es zum Ufer.")] * 3,
        "fr": [("He finally made it to the bank.", "Il est allé à la banque.", "Il est allé à la rive.")] * 2,
        "xx": [("A bat.", "Une chauve-souris.", "Une batte.")],  # not a known language: counted as skipped
    }
    for split, items in translations.items():
        rows = [
            {
                "image": _png(i),
                "image_name": f"{split}_{i}.jpg",
                "source": s,
                "correct_translation": c,
                "incorrect_translation": x,
            }
            for i, (s, c, x) in enumerate(items)
        ]
        if split == "de":
            rows.append({**rows[0], "image": CORRUPT_IMAGE, "image_name": "broken.jpg"})
            rows.append({**rows[0], "incorrect_translation": ""})
        _write_split(rows, features, os.path.join(directory, "data", f"{split}-00000-of-00001.parquet"))
    return str(directory)


def write_multi30k(directory) -> str:
    """`romrawinjp/multi30k` layout: columns en, cs, de, fr, image; test split shard."""
    features = Features(
        {"en": Value("string"), "cs": Value("string"), "de": Value("string"), "fr": Value("string"), "image": Image()}
    )
    rows = [
        {
            "en": "A dog runs on the beach.",
            "cs": "Pes běží po pláži.",
            "de": "Ein Hund läuft am Strand.",
            "fr": "Un chien court sur la plage.",
            "image": _png(1),
        },
        {
            "en": "Two men play football.",
            "cs": "Dva muži hrají fotbal.",
            "de": "Zwei Männer spielen Fußball.",
            "fr": "Deux hommes jouent au football.",
            "image": _png(2, (64, 40)),
        },
        {"en": "A child eats.", "cs": "Dítě jí.", "de": "Ein Kind isst.", "fr": "Un enfant mange.", "image": None},
        {"en": "A cat sleeps.", "cs": "Kočka spí.", "de": "", "fr": "Un chat dort.", "image": _png(3)},
    ]
    _write_split(rows, features, os.path.join(directory, "data", "test-00000-of-00001.parquet"))
    return str(directory)


def write_alm_bench(directory) -> str:
    """`MBZUAI/ALM-Bench` layout: the image in `file_name`, the ten columns of its loaders, a test split."""
    names = [
        "ID",
        "Language",
        "Category",
        "Question_Type",
        "English_Question",
        "English_Answer",
        "Translated_Question",
        "Translated_Answer",
        "Image_Url",
    ]
    features = Features({"file_name": Image(), **{name: Value("string") for name in names}})

    def row(i, language, category, kind, question, answer, image=None):
        return {
            "file_name": image if image is not None else _png(10 + i),
            "ID": f"{i:03d}_1_01_001",
            "Language": language,
            "Category": category,
            "Question_Type": kind,
            "English_Question": question,
            "English_Answer": answer,
            "Translated_Question": question,
            "Translated_Answer": answer,
            "Image_Url": f"https://example.org/{i}.jpg",
        }

    rows = [
        row(
            0,
            "English",
            "Food",
            "Multiple Choice Questions",
            "Which dish is shown?",
            "Paella (Options: Paella, Sushi, Tacos)",
        ),
        row(1, "English", "Festivals", "True False Question", "Is this a festival?", "True"),
        row(2, "English", "Food", "Short Question", "What is the main ingredient?", "Rice"),
        row(
            3,
            "English",
            "Heritage",
            "Long Question",
            "Describe the building.",
            "A large gothic cathedral with two towers.",
        ),
        row(
            4,
            "German",
            "Food",
            "Multiple Choice Questions",
            "Welches Gericht?",
            "Brezel（Optionen: Brezel、Knödel、Strudel）",
        ),
        row(5, "German", "Heritage", "True False Question", "Ist das eine Burg?", "Falsch"),
        row(6, "Klingon", "Food", "Short Question", "nuq?", "qagh"),
        row(7, "English", "Food", "Riddle", "What?", "Nothing"),
        row(8, "English", "Food", "Multiple Choice Questions", "Which one?", "no options here"),
        row(9, "German", "Food", "Short Question", "Was ist das?", "Brot", image=CORRUPT_IMAGE),
    ]
    _write_split(rows, features, os.path.join(directory, "data", "test-00000-of-00001.parquet"))
    return str(directory)


def write_video(path, num_frames=6, size=(48, 32), seed=0) -> str:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


def write_vimul(directory) -> str:
    """A ViMUL-Bench-style JSON-lines file (schema UNCONFIRMED upstream) with videos under `videos/`."""
    video_dir = os.path.join(directory, "videos")
    os.makedirs(video_dir, exist_ok=True)
    write_video(os.path.join(video_dir, "festival.mp4"), seed=1)
    write_video(os.path.join(video_dir, "market.mp4"), num_frames=3, seed=2)
    rows = [
        {
            "video": "festival.mp4",
            "question": "Which festival is shown?",
            "options": ["Diwali", "Holi", "Eid"],
            "answer": "B",
            "language": "english",
            "category": "Festivals",
            "question_type": "mcq",
        },
        {
            "video": "market.mp4",
            "question": "¿Qué se vende?",
            "options": ["Frutas", "Pescado"],
            "answer": "Frutas",
            "language": "spanish",
            "category": "Food",
            "question_type": "mcq",
        },
        {
            "video": "market.mp4",
            "question": "What happens in the video?",
            "options": [],
            "answer": "People buy fruit at a market.",
            "language": "english",
            "category": "Food",
            "question_type": "long",
        },
        {
            "video": "missing.mp4",
            "question": "What is this?",
            "options": ["A", "B"],
            "answer": "A",
            "language": "english",
            "category": "Food",
            "question_type": "mcq",
        },
        {
            "video": "festival.mp4",
            "question": "Wat?",
            "options": ["x", "y"],
            "answer": "z",
            "language": "english",
            "category": "Food",
            "question_type": "mcq",
        },
    ]
    path = os.path.join(directory, "vimul.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_vimul_embedded(directory) -> str:
    """The same kind of rows with the video embedded as a datasets `Video` feature in a parquet shard."""
    from datasets import Video

    os.makedirs(directory, exist_ok=True)
    clip = write_video(os.path.join(directory, "clip.mp4"), seed=3)
    with open(clip, "rb") as handle:
        video = {"bytes": handle.read(), "path": None}
    features = Features(
        {
            "video": Video(),
            "question": Value("string"),
            "options": [Value("string")],
            "answer": Value("string"),
            "language": Value("string"),
        }
    )
    rows = [
        {
            "video": video,
            "question": "Welches Fest?",
            "options": ["Ostern", "Karneval"],
            "answer": "A",
            "language": "german",
        },
        {
            "video": {"bytes": b"not a video", "path": None},
            "question": "Q?",
            "options": ["a", "b"],
            "answer": "A",
            "language": "german",
        },
    ]
    _write_split(rows, features, os.path.join(directory, "data", "test-00000-of-00001.parquet"))
    return str(directory)
