"""Synthetic captions from any OpenAI-compatible chat endpoint (the paper used Gemini 2.5; vLLM, TGI and most
hosted APIs serve the same `/chat/completions` route). Optional: nothing else in the package needs it.

Each image gets one request: a system prompt from a family of prompts.SYNTH_SYSTEM_PROMPTS (seeded draw per image)
and a user turn holding the image (as a data URL) and an English caption prompt. The answer becomes a caption row
(English) with `synthesis = {family, model}` bookkeeping, written in the local JSONL format.
"""

import base64
import json
import random
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .jsonl import media_extension
from .prompts import SYNTH_SYSTEM_PROMPTS, caption_prompt
from .report import BuildReport
from .schema import image_block, make_sample, media, message


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}


def _post_json(url: str, payload: dict, headers: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class ChatClient:
    """Minimal OpenAI-compatible client: `client.complete(payload) -> text`. `post(url, payload, headers, timeout)`
    is injectable for tests."""

    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 120.0, post=None):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout, self.post = timeout, post or _post_json

    def complete(self, payload: dict) -> str:
        answer = self.post(self.url, payload, self.headers, self.timeout)
        try:
            return answer["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ValueError(f"{self.url} answered without choices[0].message.content: {str(answer)[:300]}") from None


def caption_request(image: bytes, system_prompt: str, user_prompt: str, model: str, max_tokens: int = 1024,
                    temperature: float = 0.7) -> dict:
    """The chat-completions payload for one image."""
    mime = _MIME.get(media_extension(image), "application/octet-stream")
    data_url = f"data:{mime};base64,{base64.b64encode(image).decode()}"
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                         {"type": "text", "text": user_prompt}]},
        ],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }


def synthesize_captions(images_dir, client: ChatClient, model: str, *, seed: int = 0, families=None,
                        limit: int | None = None, source: str = "synthetic_captions",
                        report: BuildReport | None = None):
    """Yield caption rows for the images in `images_dir` (sorted, non-recursive); failed requests are counted."""
    families = list(families or SYNTH_SYSTEM_PROMPTS)
    unknown = set(families) - set(SYNTH_SYSTEM_PROMPTS)
    if unknown:
        raise ValueError(f"unknown prompt families {sorted(unknown)}; known: {sorted(SYNTH_SYSTEM_PROMPTS)}")
    report = report if report is not None else BuildReport("synth")
    paths = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    progress = tqdm(paths, desc="synth", unit="image", dynamic_ncols=True)
    for path in progress:
        progress.set_postfix(skipped=sum(report.skipped.get(source, {}).values()), refresh=False)
        rng = random.Random(f"{seed}:{path.name}")
        family = rng.choice(families)
        system_prompt = rng.choice(SYNTH_SYSTEM_PROMPTS[family])
        user_prompt = caption_prompt("en", rng)
        try:
            caption = client.complete(caption_request(path.read_bytes(), system_prompt, user_prompt, model))
        except (OSError, ValueError) as error:
            report.skip(source, "request_failed", f"{path.name}: {error}")
            continue
        if not caption:
            report.skip(source, "empty_conversation", f"{path.name}: empty caption")
            continue
        row = make_sample(path.stem, source, "en", [message("user", image_block(), user_prompt),
                                                    message("assistant", caption)],
                          images=[media(path=str(path.resolve()))])
        report.keep(source, "en")
        yield {**row, "synthesis": {"family": family, "model": model}}
