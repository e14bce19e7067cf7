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


class SlowTranslator:
    """A translation backend double: `<target>|<source text>` for each Tower+ prompt, `delay` seconds per call."""

    def __init__(self, delay: float = 0.0, fail_after: int | None = None):
        self.delay, self.fail_after, self.calls = delay, fail_after, 0

    def __call__(self, prompts):
        import time

        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the run stops here, as if killed
        time.sleep(self.delay)
        outputs = []
        for prompt in prompts:
            _, source_line, target_line = prompt.split("\n")
            outputs.append(f"{target_line.split(':')[0]}|{source_line.split(': ', 1)[1]}")
        return outputs


class FakeKiwi:
    """A COMETKiwi double: a score from the translation's length, `delay` seconds per call."""

    delay = 0.0

    def __init__(self, model=None, batch_size=None, gpus=None):
        pass

    def __call__(self, sources, translations):
        import time

        time.sleep(self.delay)
        return [(len(translation) % 10) / 10 for translation in translations]
