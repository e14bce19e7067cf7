"""The scoring API: exact log-probabilities, padding/batching invariance, known-winner contrasts, generation."""

import pytest
import torch
from eval_helpers import build_native_llava_onevision, build_tiny_model_and_processor, random_image

from towervision_hf.evaluation.scoring import (
    end_of_turn_text,
    generate,
    render_prompt,
    score_continuations,
    user_prompt,
)


@pytest.fixture(scope="module", params=["towervision", "native_llava_onevision"])
def tiny(request):
    """TowerVision, and transformers' LlavaOnevision: the API only uses the generic processor / model interface."""
    if request.param == "towervision":
        return build_tiny_model_and_processor()
    return build_native_llava_onevision()


def _boost(model, processor, text: str, amount: float):
    """Add `amount` to the output logits of every token of `text`, whatever the input (a forward hook on the head)."""
    token_ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    bias = torch.zeros(model.get_output_embeddings().out_features)
    bias[token_ids] = amount
    return model.get_output_embeddings().register_forward_hook(lambda module, inputs, output: output + bias)


def test_scores_are_log_softmax_sums_over_the_continuation_tokens(tiny):
    model, processor = tiny
    prompt = user_prompt("Translate: bank", [random_image(0)])
    score = score_continuations(model, processor, [prompt], ["banque"])[0]

    full_text = render_prompt(processor, prompt) + "banque<end_of_turn>"
    inputs = processor(text=[full_text], images=[prompt.images], return_tensors="pt", add_special_tokens=False)
    num_tokens = len(processor.tokenizer("banque<end_of_turn>", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = model(**inputs).logits[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(ids) - num_tokens, len(ids)))

    assert end_of_turn_text(processor) == "<end_of_turn>"
    assert score.num_tokens == num_tokens
    assert score.sum_logprob == pytest.approx(expected, abs=1e-4)
    assert score.mean_logprob == pytest.approx(expected / num_tokens, abs=1e-5)
    assert score.sum_logprob < 0


def test_padding_side_and_batching_do_not_change_scores(tiny):
    model, processor = tiny
    prompts = [
        user_prompt("Translate: bank", [random_image(1, (40, 50))]),
        user_prompt("A much longer question about this picture?", [random_image(2, (64, 32))]),
        user_prompt("Text only"),
        user_prompt("Another picture", [random_image(3, (30, 30))]),
    ]
    continuations = ["banque", "une réponse bien plus longue", "ok", "x"]
    reference = [s.sum_logprob for s in score_continuations(model, processor, prompts, continuations, batch_size=1)]
    original_side = processor.tokenizer.padding_side
    try:
        for side in ("left", "right"):
            processor.tokenizer.padding_side = side
            batched = score_continuations(model, processor, prompts, continuations, batch_size=4)
            assert [s.sum_logprob for s in batched] == pytest.approx(reference, abs=1e-4)
    finally:
        processor.tokenizer.padding_side = original_side


def test_the_certainly_more_likely_continuation_scores_higher(tiny):
    model, processor = tiny
    prompt = user_prompt("Which word?", [random_image(4)])
    handle = _boost(model, processor, "a", 8.0)
    try:
        likely, unlikely = score_continuations(model, processor, [prompt, prompt], ["aaaa", "zzzz"])
    finally:
        handle.remove()
    assert likely.num_tokens == unlikely.num_tokens
    assert likely.sum_logprob > unlikely.sum_logprob + 20  # 4 tokens, each boosted by 8 nats
    assert likely.mean_logprob > unlikely.mean_logprob


def test_is_greedy_and_generation_decode_only_new_tokens(tiny):
    model, processor = tiny
    prompt = user_prompt("Say nothing", [random_image(5)])
    handle = _boost(model, processor, "<end_of_turn>", 100.0)
    try:
        stop_now, keep_going = score_continuations(model, processor, [prompt, prompt], ["", "a"])
        assert generate(model, processor, [prompt], max_new_tokens=4) == [""]  # special tokens skipped
    finally:
        handle.remove()
    assert stop_now.is_greedy and stop_now.num_tokens == 1
    assert not keep_going.is_greedy

    handle = _boost(model, processor, "a", 100.0)
    try:
        answers = generate(model, processor, [prompt, user_prompt("text only")], max_new_tokens=4)
        cut = generate(model, processor, [prompt], max_new_tokens=4, stop_strings=["aaa"])
    finally:
        handle.remove()
    assert answers == ["aaaa", "aaaa"]  # only the new tokens, never the prompt
    assert cut == [""]


def test_video_prompts_are_scored_and_generated(tiny):
    import numpy as np

    model, processor = tiny
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)
    prompt = user_prompt("What happens?", videos=[frames])
    score = score_continuations(model, processor, [prompt], ["nothing"])[0]
    assert score.num_tokens == len(processor.tokenizer("nothing<end_of_turn>", add_special_tokens=False)["input_ids"])
    assert len(generate(model, processor, [prompt], max_new_tokens=3)) == 1


def test_mismatched_inputs_are_rejected(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="2 prompts but 1 continuations"):
        score_continuations(model, processor, [user_prompt("a"), user_prompt("b")], ["x"])
