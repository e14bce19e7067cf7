"""Open-ended answers scored 0-10 by a judge model behind any OpenAI-compatible `/chat/completions` endpoint.

The HTTP call is one seam (`transport`), so tests exercise the request and the parsing with a fake transport
and never the network. Failures (HTTP errors, unparsable replies) are returned as None and counted by the caller.
"""

import json
import os
import re
import urllib.request

from .prompts import judge_prompt


def _post_json(url: str, payload: dict, headers: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def parse_score(reply: str, max_score: float = 10.0) -> float | None:
    """The first number in `reply`, clamped to [0, max_score] and divided by max_score; None if there is none."""
    match = re.search(r"-?\d+(?:[.,]\d+)?", reply or "")
    if match is None:
        return None
    value = float(match.group(0).replace(",", "."))
    return min(max(value, 0.0), max_score) / max_score


class OpenAICompatibleJudge:
    """Grades (question, reference, prediction) triples with a chat model; `score` returns a value in [0, 1] or None.

    Args:
        endpoint: base URL, e.g. `http://localhost:8000/v1` (`/chat/completions` is appended).
        model: the judge model name the server expects.
        api_key: sent as a Bearer token; defaults to `$OPENAI_API_KEY` when set.
        transport: `callable(url, payload, headers, timeout) -> dict` doing the POST; defaults to urllib.
    """

    def __init__(self, endpoint: str, model: str, api_key: str | None = None, timeout: float = 60.0, transport=None):
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.transport = transport or _post_json
        self.errors: list[str] = []

    def request_payload(self, prompt: str) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 16,
        }

    def score(self, question: str, reference: str, prediction: str) -> float | None:
        """The grade of `prediction` with our 0-10 prompt (`prompts.judge_prompt`)."""
        return self.grade(judge_prompt(question, reference, prediction))

    def grade(self, prompt: str) -> float | None:
        """The judge's reply to a grading `prompt` that asks for a score out of 10, scaled to [0, 1]."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            response = self.transport(self.url, self.request_payload(prompt), headers, self.timeout)
            reply = response["choices"][0]["message"]["content"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            return None
        return parse_score(reply)


def judge_open_ended(judge: OpenAICompatibleJudge | None, record: dict, result, prompt: str | None = None):
    """The judge's grade for `record` (question / answer / prediction), with our prompt or the benchmark's `prompt`,
    counting in `result` the answers left unscored: `open_ended_unjudged` without a judge, `judge_failed` when the
    judge call fails."""
    if judge is None:
        result.skip("open_ended_unjudged")
        return None
    if prompt is None:
        score = judge.score(record["question"], record["answer"], record["prediction"])
    else:
        score = judge.grade(prompt)
    if score is None:
        result.skip("judge_failed")
    return score
