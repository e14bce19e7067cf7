"""Model-side scoring API shared by every benchmark: log-likelihood of a continuation and greedy generation.

Scores are **log-probabilities (natural log, higher is better)**, not the mean negative log-likelihood ("loss")
that lmms-eval's HF wrappers return (EvolvingLMMs-Lab/lmms-eval#370). For a continuation c = (c_1 .. c_n) given a
prompt p, with the chat template's end-of-turn marker appended (see `score_continuations`):

- `sum_logprob  = sum_i log P(c_i | p, c_<i)`   -- log-probability of the whole continuation;
- `mean_logprob = sum_logprob / n`              -- per-token average; `exp(-mean_logprob)` is the perplexity.

Both are computed with `log_softmax` over the model's output logits, which for TowerVision are the final
(soft-capped) logits that generation also samples from. The code relies only on the generic processor / model
interface (`processor.apply_chat_template`, `processor(text=, images=, videos=)`, `model(**inputs).logits`,
`model.generate`), so any transformers image-text-to-text model with a chat template can be scored.
"""

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch


_SENTINEL = "\u2063TOWERVISION-SCORING-SENTINEL\u2063"


@dataclass
class Prompt:
    """One model input: a conversation ending with a user turn, and the media its placeholders stand for.

    `messages` use content lists of `{"type": "image"}`, `{"type": "video"}` and `{"type": "text", "text": ...}`
    blocks; `images[i]` / `videos[i]` fill the i-th image / video block in reading order. Images are PIL images,
    videos are frame arrays `(num_frames, height, width, 3)` already sampled (see `media.load_video_frames`): the
    processor uses every frame given and does not resample.
    """

    messages: list[dict]
    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)


def user_prompt(text: str, images=(), videos=()) -> Prompt:
    """A single user turn: the media blocks first (images, then videos), then the text."""
    content = [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
    content.append({"type": "text", "text": text})
    return Prompt([{"role": "user", "content": content}], list(images), list(videos))


@dataclass(frozen=True)
class ContinuationScore:
    """Log-probability of one continuation (natural log, higher is better) and whether greedy decoding yields it."""

    sum_logprob: float
    mean_logprob: float
    num_tokens: int
    is_greedy: bool


def load_model_and_processor(
    model_path: str, device: str | None = None, dtype: str = "auto", attn_implementation=None
):
    """`AutoModelForImageTextToText` + `AutoProcessor` with `trust_remote_code=True`, in eval mode on `device`
    (default: cuda when available, else cpu)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .. import model as _  # noqa: F401  (registers the installed classes, for checkpoints without remote code)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = {"trust_remote_code": True, "dtype": dtype, "device_map": device}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(model_path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    return model, processor


def default_num_frames(model, processor) -> int:
    """Frames per video the checkpoint expects: the video processor's `num_frames`, else the config's, else 32."""
    video_processor = getattr(processor, "video_processor", None)
    return getattr(video_processor, "num_frames", None) or getattr(model.config, "num_frames", None) or 32


def render_prompt(processor, prompt: Prompt) -> str:
    """The chat-template text of `prompt` followed by the generation prompt (the assistant turn opener)."""
    return processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)


def end_of_turn_text(processor) -> str:
    """What the chat template writes right after an assistant message (e.g. `<end_of_turn>`), whitespace stripped.

    Read off the template itself by rendering an assistant turn around a sentinel, so no end-of-sequence id has to
    be guessed (Gemma-2 chat checkpoints list both `<eos>` and `<end_of_turn>` as eos ids).
    """
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    return rendered.split(_SENTINEL, 1)[1].strip()


def _encode(processor, texts: list[str], prompts: list[Prompt], padding_side: str | None = None):
    """Tokenize rendered `texts` together with their prompts' media (one processor call, padded batch)."""
    images = [prompt.images for prompt in prompts]
    videos = [video for prompt in prompts for video in prompt.videos]
    bos = getattr(processor.tokenizer, "bos_token", None)
    kwargs = {"padding": True, "return_tensors": "pt"}
    if padding_side is not None:
        kwargs["padding_side"] = padding_side
    # rendered chat templates already start with <bos>: never add a second one
    kwargs["add_special_tokens"] = not (bos and all(text.startswith(bos) for text in texts))
    if videos:
        kwargs["do_sample_frames"] = False  # frames were sampled when the video was decoded (media.load_video_frames)
    return processor(
        text=texts,
        images=images if any(images) else None,
        videos=videos or None,
        **kwargs,
    )


def _media_groups(prompts: list[Prompt], batch_size: int) -> list[list[int]]:
    """Batches of prompt indices; a batch never mixes prompts with different numbers of images / videos."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault((len(prompt.images), len(prompt.videos)), []).append(index)
    return [indices[i : i + batch_size] for indices in groups.values() for i in range(0, len(indices), batch_size)]


def _real_positions(attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Per row, the sequence positions of real (non-padding) tokens, in order; works for left or right padding."""
    return [row.nonzero().squeeze(-1) for row in attention_mask]


def _forward_logits(model, inputs, first_needed_position: int) -> tuple[torch.Tensor, int]:
    """Logits for positions `[offset, seq_len)`, asking the model for no more than that when it supports it."""
    seq_len = inputs["input_ids"].shape[1]
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        keep = seq_len - first_needed_position
        return model(**inputs, logits_to_keep=keep).logits, seq_len - keep
    return model(**inputs).logits, 0


@torch.inference_mode()
def score_continuations(
    model,
    processor,
    prompts: list[Prompt],
    continuations: list[str],
    batch_size: int = 8,
    include_end_of_turn: bool = True,
) -> list[ContinuationScore]:
    """Log-likelihood of each `continuations[i]` as the assistant's answer to `prompts[i]`.

    The prompt is rendered through the chat template with the generation prompt; the scored text is the
    continuation followed (when `include_end_of_turn`) by the template's end-of-turn marker, so that a translation
    is scored as a *complete* answer. Continuation tokens are identified by tokenizing the prompt alone and the
    prompt + continuation (same media, same processor call semantics) and taking the tokens past the prompt; the
    prompt's tokens must be a prefix of the full sequence (ValueError otherwise). Padding side does not matter:
    positions come from the attention mask.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    closing = end_of_turn_text(processor) if include_end_of_turn else ""
    scores: list[ContinuationScore | None] = [None] * len(prompts)
    for batch in _media_groups(prompts, batch_size):
        batch_prompts = [prompts[i] for i in batch]
        prompt_texts = [render_prompt(processor, prompt) for prompt in batch_prompts]
        full_texts = [text + continuations[i] + closing for text, i in zip(prompt_texts, batch)]
        prompt_inputs = _encode(processor, prompt_texts, batch_prompts)
        inputs = _encode(processor, full_texts, batch_prompts).to(model.device, dtype=model.dtype)

        input_ids = inputs["input_ids"].cpu()
        spans = []  # per row: sequence positions of the continuation tokens
        for row, (prompt_positions, full_positions) in enumerate(
            zip(_real_positions(prompt_inputs["attention_mask"]), _real_positions(inputs["attention_mask"].cpu()))
        ):
            prompt_ids = prompt_inputs["input_ids"][row, prompt_positions]
            full_ids = input_ids[row, full_positions]
            num_prompt = len(prompt_ids)
            if len(full_ids) <= num_prompt or not torch.equal(full_ids[:num_prompt], prompt_ids):
                raise ValueError(
                    f"continuation {batch[row]} ({continuations[batch[row]]!r}) does not extend its prompt's tokens: "
                    "the tokenizer merges across the prompt/continuation boundary, or the continuation is empty"
                )
            spans.append(full_positions[num_prompt:])

        first_needed = min(int(span[0]) for span in spans) - 1  # logits at t predict the token at t + 1
        logits, offset = _forward_logits(model, inputs, first_needed)
        for row, span in enumerate(spans):
            targets = input_ids[row, span]
            step_logits = logits[row, (span - 1 - offset).to(logits.device)].float().cpu()  # (num_tokens, vocab)
            token_logprobs = step_logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
            total = float(token_logprobs.sum())
            scores[batch[row]] = ContinuationScore(
                sum_logprob=total,
                mean_logprob=total / len(span),
                num_tokens=len(span),
                is_greedy=bool((step_logits.argmax(-1) == targets).all()),
            )
    return scores


def _truncate_at_stop(text: str, stop_strings) -> str:
    for stop in stop_strings or ():
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text


@torch.inference_mode()
def generate(
    model,
    processor,
    prompts: list[Prompt],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    stop_strings=None,
    **generate_kwargs: Any,
) -> list[str]:
    """Greedy answers to `prompts`: only the new tokens, special tokens skipped, whitespace stripped.

    Batches are left-padded; `stop_strings` cut each answer at the first occurrence of any of them;
    `generate_kwargs` go to `model.generate` (e.g. `do_sample=True, temperature=0.7`).
    """
    generate_kwargs = {"do_sample": False, **generate_kwargs}
    pad_token_id = processor.tokenizer.pad_token_id
    if pad_token_id is not None:
        generate_kwargs.setdefault("pad_token_id", pad_token_id)
    answers: list[str | None] = [None] * len(prompts)
    for batch in _media_groups(prompts, batch_size):
        batch_prompts = [prompts[i] for i in batch]
        texts = [render_prompt(processor, prompt) for prompt in batch_prompts]
        inputs = _encode(processor, texts, batch_prompts, padding_side="left").to(model.device, dtype=model.dtype)
        output_ids = model.generate(**inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        new_ids = output_ids[:, inputs["input_ids"].shape[1] :]
        for index, text in zip(batch, processor.batch_decode(new_ids, skip_special_tokens=True)):
            answers[index] = _truncate_at_stop(text, stop_strings).strip()
    return answers
