"""Synthetic answers from any OpenAI-compatible chat endpoint: the "Synthetic (Generated)" rows of VisionBlocks.

The paper re-answers the questions of public VQA sets with Gemini 2.5, steering the answer format with the system
prompts of its A.5.2 (prompts.ANSWER_FORMAT_PROMPTS: direct answers, caption + answer, "Final Answer:" endings, ...),
several prompts per image. Here every question (each user turn of a source row) becomes one request: the A.5.2
system prompt, the row's images (bytes and files as data URLs, URLs as they are) and the question. The questions of
one image get different prompts (drawn without replacement, seeded per image), `prompts_per_question` requests per
question. The answer becomes a row `[system prompt, question + images, answer]` that keeps the system prompt, so the
model learns to follow it, with `synthesis = {model, family, prompt, source_id}` bookkeeping (local JSONL format).
vLLM, TGI and most hosted APIs (Gemini's OpenAI-compatible endpoint included) serve `/chat/completions`.
"""

import base64
import json
import random
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .jsonl import media_extension
from .prompts import ANSWER_FORMAT_PROMPTS
from .report import BuildReport
from .schema import make_sample, validate_sample

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


def image_url(entry: dict) -> str:
    """A media entry as an `image_url` the endpoint reads: a base64 data URL for bytes and files, else its URL."""
    data = entry.get("bytes")
    if not data and entry.get("path"):
        data = Path(entry["path"]).read_bytes()
    if not data:
        return entry["url"]
    mime = _MIME.get(media_extension(data), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def answer_request(images: list[dict], question: str, system_prompt: str, model: str, max_tokens: int = 1024,
                   temperature: float = 0.7) -> dict:
    """The chat-completions payload asking `question` about `images` (schema media entries) under `system_prompt`."""
    content = [{"type": "image_url", "image_url": {"url": image_url(entry)}} for entry in images]
    return {
        "model": model,
        "messages": [{"role": "system", "content": system_prompt},
                     {"role": "user", "content": content + [{"type": "text", "text": question}]}],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }


def _questions(row: dict) -> list[str]:
    return [" ".join(block["text"] for block in turn["content"] if block["type"] == "text")
            for turn in row["messages"] if turn["role"] == "user"]


def synthesize_answers(rows, client: ChatClient, model: str, *, seed: int = 0, families=None,
                       prompts_per_question: int = 1, source: str = "synthetic", limit: int | None = None,
                       report: BuildReport | None = None):
    """Yield re-answered rows for the questions of `rows` (schema rows with images); failures are counted."""
    families = list(families or ANSWER_FORMAT_PROMPTS)
    unknown = set(families) - set(ANSWER_FORMAT_PROMPTS)
    if unknown:
        raise ValueError(f"unknown prompt families {sorted(unknown)}; known: {sorted(ANSWER_FORMAT_PROMPTS)}")
    if prompts_per_question < 1:
        raise ValueError(f"prompts_per_question must be at least 1, got {prompts_per_question}")
    prompts = [(family, prompt) for family in families for prompt in ANSWER_FORMAT_PROMPTS[family]]
    report = report if report is not None else BuildReport("synth")
    emitted = 0
    progress = tqdm(rows, desc="synth", unit="row", dynamic_ncols=True)
    for row in progress:
        progress.set_postfix(skipped=sum(report.skipped.get(source, {}).values()), refresh=False)
        problems = validate_sample({key: value for key, value in row.items() if key in
                                    ("id", "source", "language", "messages", "images", "videos")})
        if problems or not row["images"]:
            report.skip(source, "invalid_sample", f"{row.get('id')}: {'; '.join(problems) or 'no image'}")
            continue
        questions = [question for question in _questions(row) if question.strip()]
        rng = random.Random(f"{seed}:{row['id']}")
        needed = len(questions) * prompts_per_question
        draws = rng.sample(prompts, needed) if needed <= len(prompts) else rng.choices(prompts, k=needed)
        for number, question in enumerate(questions):
            for repeat in range(prompts_per_question):
                family, system_prompt = draws[number * prompts_per_question + repeat]
                try:
                    answer = client.complete(answer_request(row["images"], question, system_prompt, model))
                except (OSError, ValueError) as error:
                    report.skip(source, "request_failed", f"{row['id']} question {number}: {error}")
                    continue
                if not answer:
                    report.skip(source, "empty_conversation", f"{row['id']} question {number}: empty answer")
                    continue
                user = {"role": "user", "content": [{"type": "image", "text": None} for _ in row["images"]]
                        + [{"type": "text", "text": question}]}
                messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]}, user,
                            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
                synthetic = make_sample(f"{row['id']}:q{number}:p{repeat}", source, "en", messages,
                                        images=[dict(entry) for entry in row["images"]])
                report.keep(source, "en")
                yield {**synthetic, "synthesis": {"model": model, "family": family, "prompt": system_prompt,
                                                  "source_id": row["id"]}}
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
