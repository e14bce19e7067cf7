"""Shared fixtures: everything is tiny, offline and built in-process."""

import os

import pytest


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from towervision_hf.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from towervision_hf.tiny import tiny_config

    return tiny_config(tiny_tokenizer)
