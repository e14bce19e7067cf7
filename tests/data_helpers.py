"""Helpers of the data pipeline tests: bench/chat_server.py's local endpoint and question rows, and doubles of
the translation and COMETKiwi models."""

import importlib.util
from pathlib import Path


_spec = importlib.util.spec_from_file_location(
    "chat_server", Path(__file__).resolve().parents[1] / "bench" / "chat_server.py"
)
chat_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chat_server)
ChatServer, question_rows = chat_server.ChatServer, chat_server.question_rows


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
