"""Helpers of the data pipeline tests: question rows with images, and bench/chat_server.py's local endpoint."""

import importlib.util
from pathlib import Path

from towervision_hf.data.sample import draw_shape, png_bytes
from towervision_hf.data.schema import image_block, make_sample, media, message

_spec = importlib.util.spec_from_file_location(
    "chat_server", Path(__file__).resolve().parents[1] / "bench" / "chat_server.py"
)
chat_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat_server)
ChatServer = chat_server.ChatServer


def question_rows(count: int) -> list[dict]:
    """`count` VQA rows, each with its own small PNG; every third asks two questions."""
    colours = ("red", "green", "blue", "yellow")
    rows = []
    for index in range(count):
        picture = png_bytes(draw_shape("circle", colours[index % 4], (12 + index % 5, 12)))
        turns = [message("user", image_block(), f"What colour is shape {index}?"), message("assistant", "?")]
        if index % 3 == 0:
            turns += [message("user", f"How many shapes are in picture {index}?"), message("assistant", "1")]
        rows.append(make_sample(f"q{index}", "vqa", "en", turns, images=[media(bytes=picture)]))
    return rows
