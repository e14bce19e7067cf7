"""Synthetic answers from any OpenAI-compatible chat endpoint: the "Synthetic (Generated)" rows of VisionBlocks.

The paper re-answers the questions of public VQA sets with Gemini 2.5, steering the answer format with the system
prompts of its A.5.2 (prompts.ANSWER_FORMAT_PROMPTS: direct answers, caption + answer, "Final Answer:" endings, ...),
several prompts per image. Here every question (each user turn of a source row) becomes one request: the A.5.2
system prompt, the row's images (bytes and files as data URLs, URLs as they are) and the question. The questions of
one image get different prompts (drawn without replacement, seeded per image), `prompts_per_question` requests per
question. The answer becomes a row `[system prompt, question + images, answer]` that keeps the system prompt, so the
model learns to follow it, with `synthesis = {model, family, prompt, source_id}` bookkeeping (local JSONL format).
vLLM, TGI and most hosted APIs (Gemini's OpenAI-compatible endpoint included) serve `/chat/completions`.

Requests go through the `openai` client (`pip install 'towervision-hf[data]'`), `concurrency` of them in flight
(threads sharing one connection pool), each attempt bounded in time and retried as `ChatClient` says. An answer that
finally failed is counted as `request_failed`; one the endpoint cut at its token limit (`finish_reason: "length"`)
is dropped and counted as `cut_answer`, never written as a training target.
"""

import base64
import random
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

from .jsonl import media_extension
from .prompts import ANSWER_FORMAT_PROMPTS
from .report import BuildReport
from .schema import make_sample, validate_sample


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}


class ChatClient:
    """An OpenAI-compatible endpoint through the `openai` client: `client.complete(payload) -> (text,
    finish_reason)`, safe to call from several threads.

    Each attempt is bounded by `timeout` seconds. 408, 409, 429 and 5xx answers, dropped connections and timeouts are
    retried up to `max_retries` times, after the server's `Retry-After` when it sends one (up to 2 minutes), else
    with exponential backoff (0.5 s doubling up to 8 s, less up to 25 % random jitter): the openai client's policy.
    A request that still fails raises `ValueError` with the last error.
    """

    def __init__(self, endpoint: str, api_key: str | None = None, timeout: float = 120.0, max_retries: int = 5):
        try:
            from openai import OpenAI
        except ImportError:
            raise ImportError("synth needs the openai client: pip install 'towervision-hf[data]'") from None
        self.endpoint = endpoint
        # a local server wants no key; the client insists on one and sends it as a bearer token
        self.client = OpenAI(base_url=endpoint, api_key=api_key or "none", timeout=timeout, max_retries=max_retries)

    def complete(self, payload: dict) -> tuple[str, str | None]:
        from openai import APIError

        try:
            completion = self.client.chat.completions.create(**payload)
        except APIError as error:
            cause = f" ({error.__cause__})" if error.__cause__ else ""
            raise ValueError(f"{error}{cause}") from None
        try:
            choice = completion.choices[0]
            return choice.message.content.strip(), choice.finish_reason
        except (AttributeError, IndexError, TypeError):
            raise ValueError(
                f"{self.endpoint} answered without choices[0].message.content: {str(completion)[:300]}"
            ) from None


def image_url(entry: dict) -> str:
    """A media entry as an `image_url` the endpoint reads: a base64 data URL for bytes and files, else its URL."""
    data = entry.get("bytes")
    if not data and entry.get("path"):
        data = Path(entry["path"]).read_bytes()
    if not data:
        return entry["url"]
    mime = _MIME.get(media_extension(data), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def answer_request(
    images: list[dict], question: str, system_prompt: str, model: str, max_tokens: int = 1024, temperature: float = 0.7
) -> dict:
    """The chat-completions payload asking `question` about `images` (schema media entries) under `system_prompt`."""
    content = [{"type": "image_url", "image_url": {"url": image_url(entry)}} for entry in images]
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": content + [{"type": "text", "text": question}]},
        ],
        "max_tokens": max_tokens,
        "temperature": temperature,
    }


def _questions(row: dict) -> list[str]:
    return [
        " ".join(block["text"] for block in turn["content"] if block["type"] == "text")
        for turn in row["messages"]
        if turn["role"] == "user"
    ]


def _prompt_pool(families, prompts_per_question: int) -> list[tuple[str, str]]:
    families = list(families or ANSWER_FORMAT_PROMPTS)
    unknown = set(families) - set(ANSWER_FORMAT_PROMPTS)
    if unknown:
        raise ValueError(f"unknown prompt families {sorted(unknown)}; known: {sorted(ANSWER_FORMAT_PROMPTS)}")
    if prompts_per_question < 1:
        raise ValueError(f"prompts_per_question must be at least 1, got {prompts_per_question}")
    return [(family, prompt) for family in families for prompt in ANSWER_FORMAT_PROMPTS[family]]


def answer_chunks(
    chunks,
    client: ChatClient,
    model: str,
    *,
    seed: int = 0,
    families=None,
    prompts_per_question: int = 1,
    source: str = "synthetic",
    report: BuildReport | None = None,
    concurrency: int,
    max_tokens: int = 1024,
):
    """For each chunk of question rows (schema rows with images), the list of its re-answered rows, in order.

    The requests of a chunk and of the next one are in flight together, `concurrency` at a time; a chunk's rows
    are counted into `report` (answered, `request_failed`, `cut_answer`, ...) just before its list is yielded.
    """
    prompts = _prompt_pool(families, prompts_per_question)
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    report = report if report is not None else BuildReport("synth")
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="synth")

    def ask(images, question, system_prompt):  # in a worker thread: images are read and encoded there too
        return client.complete(answer_request(images, question, system_prompt, model, max_tokens))

    def submit(row):
        problems = validate_sample(
            {
                key: value
                for key, value in row.items()
                if key in ("id", "source", "language", "messages", "images", "videos")
            }
        )
        if problems or not row["images"]:
            return row, "; ".join(problems) or "no image", []
        questions = [question for question in _questions(row) if question.strip()]
        rng = random.Random(f"{seed}:{row['id']}")
        needed = len(questions) * prompts_per_question
        draws = rng.sample(prompts, needed) if needed <= len(prompts) else rng.choices(prompts, k=needed)
        requests = []
        for index, (family, system_prompt) in enumerate(draws):
            question = questions[index // prompts_per_question]
            future = pool.submit(ask, row["images"], question, system_prompt)
            requests.append(
                (index // prompts_per_question, index % prompts_per_question, family, system_prompt, question, future)
            )
        return row, None, requests

    def collect(submitted):
        answered = []
        for row, problem, requests in submitted:
            if problem:
                report.skip(source, "invalid_sample", f"{row.get('id')}: {problem}")
            for number, repeat, family, system_prompt, question, future in requests:
                where = f"{row['id']} question {number}"
                try:
                    answer, finish_reason = future.result()
                except (OSError, ValueError) as error:
                    report.skip(source, "request_failed", f"{where}: {error}")
                    continue
                if finish_reason == "length":
                    report.skip(source, "cut_answer", f"{where}: cut at max_tokens={max_tokens}: {answer[-80:]!r}")
                    continue
                if not answer:
                    report.skip(source, "empty_conversation", f"{where}: empty answer")
                    continue
                user = {
                    "role": "user",
                    "content": [{"type": "image", "text": None} for _ in row["images"]]
                    + [{"type": "text", "text": question}],
                }
                messages = [
                    {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
                    user,
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ]
                synthetic = make_sample(
                    f"{row['id']}:q{number}:p{repeat}",
                    source,
                    "en",
                    messages,
                    images=[dict(entry) for entry in row["images"]],
                )
                report.keep(source, "en")
                answered.append(
                    {
                        **synthetic,
                        "synthesis": {
                            "model": model,
                            "family": family,
                            "prompt": system_prompt,
                            "source_id": row["id"],
                        },
                    }
                )
        return answered

    try:
        pending = None
        for chunk in chunks:
            submitted = [submit(row) for row in chunk]
            if pending is not None:
                yield collect(pending)
            pending = submitted
        if pending is not None:
            yield collect(pending)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def synthesize_answers(rows, client: ChatClient, model: str, *, chunk_size: int = 256, **options):
    """Yield the re-answered rows of `rows` in order (`answer_chunks` over chunks of `chunk_size` rows)."""
    rows = iter(rows)
    chunks = iter(lambda: list(islice(rows, chunk_size)), [])
    for answered in answer_chunks(chunks, client, model, **options):
        yield from answered
