"""Translation of samples with Tower+ (transformers `generate`, batched; vLLM when installed).

Only text blocks are translated; image/video blocks are kept as they are, so media never pass through the model.
Two modes:
  - `caption`: single-turn caption rows; the caption (assistant text) is translated and the user prompt is replaced
    by a caption prompt of the target language (prompts.py), drawn with a per-row seeded RNG;
  - `conversation`: every user and assistant text block is translated (system turns are kept).
Languages are assigned per row by `assign_languages`: every row into every language (`each`), or each row into one
language (`uniform`, balanced across languages), optionally keeping a fraction of rows in English (the paper keeps
half of LLaVA-Video-178K in English and spreads the rest uniformly).

Every translated row carries `translation = {source_id, source_language, target_language, model, segments: [{turn,
block, src, mt}]}` so that quality estimation can score it later (quality.py).
"""

import random

from tqdm.auto import tqdm

from .languages import language_name, normalize_language
from .prompts import caption_prompt
from .report import BuildReport
from .schema import validate_sample


TOWER_PROMPT = "Translate the following {source} source text to {target}:\n{source}: {text}\n{target}: "


def tower_prompt(text: str, target: str, source: str = "en") -> str:
    """The Tower+ translation instruction (sent as the single user turn of the model's chat template)."""
    source_name, target_name = language_name(source), language_name(target)
    return TOWER_PROMPT.format(source=source_name, target=target_name, text=text)


class TransformersBackend:
    """Greedy batched generation with a causal LM and its chat template: `backend(prompts) -> completions`."""

    def __init__(
        self,
        model: str,
        batch_size: int = 16,
        max_new_tokens: int = 1024,
        device: str | None = None,
        dtype: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.chat_template is None:
            raise ValueError(f"tokenizer of {model} has no chat template; Tower+ prompts go through the chat template")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<end_of_turn>")
        self.eos_token_ids = [
            token
            for token in (self.tokenizer.eos_token_id, end_of_turn)
            if token is not None and token != self.tokenizer.unk_token_id
        ]

    def __call__(self, prompts: list[str]) -> list[str]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            for prompt in prompts
        ]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        outputs = [""] * len(texts)
        for start in tqdm(range(0, len(order), self.batch_size), desc="generate", unit="batch", leave=False):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **inputs,
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=self.eos_token_ids,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = generated[:, inputs["input_ids"].shape[1] :]
            for i, text in zip(batch, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = text.strip()
        return outputs


class VLLMBackend:
    """The same greedy chat generation through vLLM (`pip install vllm`); `engine_kwargs` go to `vllm.LLM`
    (`tensor_parallel_size`, `max_num_seqs` (sequences batched per step), `gpu_memory_utilization`, ...). Each call
    hands vLLM all its prompts at once; vLLM batches them continuously."""

    def __init__(self, model: str, max_new_tokens: int = 1024, **engine_kwargs):
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model, **engine_kwargs)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def __call__(self, prompts: list[str]) -> list[str]:
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        results = self.llm.chat(conversations, self.params, use_tqdm=False)
        return [result.outputs[0].text.strip() for result in results]


def make_backend(model: str, backend: str = "auto", batch_size: int = 16, max_new_tokens: int = 1024, **vllm_kwargs):
    """`auto` picks vLLM when it is installed and a GPU is visible, else transformers. `vllm_kwargs` (vLLM engine
    settings whose value is not None) go to `VLLMBackend`."""
    if backend == "auto":
        import importlib.util

        import torch

        backend = "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"
    if backend == "vllm":
        engine_kwargs = {key: value for key, value in vllm_kwargs.items() if value is not None}
        return VLLMBackend(model, max_new_tokens=max_new_tokens, **engine_kwargs)
    if backend == "transformers":
        return TransformersBackend(model, batch_size=batch_size, max_new_tokens=max_new_tokens)
    raise ValueError(f"backend {backend!r} is not auto, transformers or vllm")


def assign_languages(count: int, languages, seed: int = 0, keep_english: float = 0.0) -> list[str]:
    """A target language per row: `round(count * keep_english)` rows stay "en", the others cycle through
    `languages` (so each gets the same number of rows, give or take one), all in a seeded random order."""
    if not 0.0 <= keep_english <= 1.0:
        raise ValueError(f"keep_english {keep_english} is not in [0, 1]")
    languages = [normalize_language(code) for code in languages]
    english = round(count * keep_english)
    if count > english and not languages:
        raise ValueError("no target languages given")
    targets = ["en"] * english + [languages[i % len(languages)] for i in range(count - english)]
    random.Random(seed).shuffle(targets)
    return targets


def _without_bookkeeping(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "translation"}


def _segments(row: dict, mode: str) -> list[tuple[int, int, str]]:
    """(turn, block, text) of the text blocks to translate."""
    roles = ("assistant",) if mode == "caption" else ("user", "assistant")
    return [
        (turn_index, block_index, block["text"])
        for turn_index, turn in enumerate(row["messages"])
        if turn["role"] in roles
        for block_index, block in enumerate(turn["content"])
        if block["type"] == "text"
    ]


def _is_caption_row(row: dict) -> bool:
    roles = [turn["role"] for turn in row["messages"]]
    return roles == ["user", "assistant"]


def plan_targets(
    count: int, languages, *, assign: str = "each", seed: int = 0, keep_english: float = 0.0
) -> list[list[str]]:
    """The target languages of each of `count` rows: all of `languages` (`each`) or one (`uniform`, see
    `assign_languages`). Planned over the whole input, so that every shard of it gets the rows' targets of one run."""
    if assign not in ("each", "uniform"):
        raise ValueError(f"assign {assign!r} is not each or uniform")
    if assign == "each" and keep_english:
        raise ValueError("keep_english applies to assign='uniform' (each row goes to one language)")
    languages = [normalize_language(code) for code in languages]
    if assign == "uniform":
        return [[target] for target in assign_languages(count, languages, seed, keep_english)]
    return [list(languages)] * count


def translate_pairs(
    pairs,
    backend,
    *,
    mode: str = "conversation",
    seed: int = 0,
    model_name: str = "",
    report: BuildReport | None = None,
    chunk_size: int | None = 256,
):
    """Yield the translated (and kept-English) rows of `(row, target languages)` pairs, in their order.

    The rows must be schema rows (invalid ones are counted and skipped). `backend(prompts) -> completions` is any
    callable (TransformersBackend, VLLMBackend or a test double); `chunk_size` (row, language) jobs at a time go to
    it in one call (all of them with None).
    """
    if mode not in ("caption", "conversation"):
        raise ValueError(f"mode {mode!r} is not caption or conversation")
    report = report if report is not None else BuildReport("translate")
    jobs = []  # (row, target) pairs still to translate
    for row, row_targets in pairs:
        source = row.get("source") or "input" if isinstance(row, dict) else "input"
        problems = validate_sample(_without_bookkeeping(row)) if isinstance(row, dict) else ["not a dict"]
        if problems:
            report.skip(source, "invalid_sample", "; ".join(problems))
            continue
        if mode == "caption" and not _is_caption_row(row):
            report.skip(source, "invalid_sample", "caption mode needs exactly one user and one assistant turn")
            continue
        for target in row_targets:
            jobs.append((row, target))
    chunk_size = chunk_size or max(len(jobs), 1)
    for start in range(0, len(jobs), chunk_size):
        yield from _translate_chunk(jobs[start : start + chunk_size], backend, mode, seed, model_name, report)


def translate_rows(
    rows,
    languages,
    backend,
    *,
    mode: str = "conversation",
    assign: str = "each",
    seed: int = 0,
    keep_english: float = 0.0,
    model_name: str = "",
    report: BuildReport | None = None,
    chunk_size: int = 256,
):
    """`translate_pairs` of `rows` and their `plan_targets`."""
    rows = list(rows)
    targets = plan_targets(len(rows), languages, assign=assign, seed=seed, keep_english=keep_english)
    yield from translate_pairs(
        zip(rows, targets), backend, mode=mode, seed=seed, model_name=model_name, report=report, chunk_size=chunk_size
    )


def _translate_chunk(jobs, backend, mode, seed, model_name, report):
    prompts, spans = [], []
    for row, target in jobs:
        segments = _segments(row, mode) if target != row["language"] else []
        spans.append((len(prompts), segments))
        prompts += [tower_prompt(text, target, row["language"]) for _, _, text in segments]
    completions = backend(prompts) if prompts else []
    if len(completions) != len(prompts):
        raise RuntimeError(f"translation backend returned {len(completions)} outputs for {len(prompts)} prompts")
    for (row, target), (offset, segments) in zip(jobs, spans):
        if not segments:
            report.keep(row["source"], row["language"])
            yield _without_bookkeeping(row)
            continue
        outputs = completions[offset : offset + len(segments)]
        if not all(output.strip() for output in outputs):
            report.skip(row["source"], "empty_translation", f"{row['id']} -> {target}: an empty translation")
            continue
        messages = [
            {"role": turn["role"], "content": [dict(block) for block in turn["content"]]} for turn in row["messages"]
        ]
        for (turn, block, _), output in zip(segments, outputs):
            messages[turn]["content"][block]["text"] = output
        if mode == "caption":
            prompt = caption_prompt(target, random.Random(f"{seed}:{row['id']}:{target}"))
            messages[0]["content"] = [block for block in messages[0]["content"] if block["type"] != "text"]
            messages[0]["content"].append({"type": "text", "text": prompt})
        translated = {
            **_without_bookkeeping(row),
            "id": f"{row['id']}:{target}",
            "language": target,
            "messages": messages,
            "translation": {
                "source_id": row["id"],
                "source_language": row["language"],
                "target_language": target,
                "model": model_name,
                "segments": [
                    {"turn": turn, "block": block, "src": text, "mt": output}
                    for (turn, block, text), output in zip(segments, outputs)
                ],
            },
        }
        report.keep(row["source"], target)
        yield translated
