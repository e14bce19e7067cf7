"""Multi30K: multimodal translation of Flickr30K captions from English, scored with xCOMET (Table 2's metric).

The model translates each English caption with its image (Tower+ translation prompt, greedy decoding). The headline
is xCOMET (the paper's Table 2: en→cs, de, fr), scaled to 0-100 like the table, from `unbabel-comet` (the `comet`
extra). The paper does not say which xCOMET: the default checkpoint `Unbabel/XCOMET-XL` is our choice,
`--comet-model` changes it (e.g. `Unbabel/XCOMET-XXL`), and a non-xCOMET model is reported as `comet`. sacrebleu's
corpus chrF and BLEU are reported beside it, never in its place: when xCOMET cannot run (`unbabel-comet` missing,
checkpoint not reachable) the headline stays empty and the run notes why.

Data: `romrawinjp/multi30k` (columns `en`, `de`, `fr`, `cs`, `image`; splits train / validation / test, test =
Flickr test2016) or a local copy in that layout.
"""

from .languages import language_code, language_name
from .media import decode_image
from .metrics import comet_system_score, translation_metrics
from .prompts import translation_prompt
from .results import RunResult
from .scoring import generate, user_prompt
from .sources import iter_rows, require_columns, undecoded


def parse_pairs(value: str) -> list[tuple[str, str]]:
    """`"en-de,en-fr"` -> [("en", "de"), ("en", "fr")]; ValueError naming a malformed entry."""
    pairs = []
    for entry in (part.strip() for part in value.split(",") if part.strip()):
        source, separator, target = entry.partition("-")
        if not separator or not source or not target:
            raise ValueError(f"--pairs entry {entry!r} is not of the form SRC-TGT (e.g. en-de)")
        pairs.append((source, target))
    return pairs


def check_pairs(split, pairs) -> None:
    """`ValueError` when none of `pairs` has both of its language columns in `split`."""
    if not any(source in split.column_names and target in split.column_names for source, target in pairs):
        wanted = ", ".join(f"{source}-{target}" for source, target in pairs)
        raise ValueError(f"Multi30K: none of the pairs {wanted} is in the data; its columns are {split.column_names}")


def prepare_item(row, source: str, target: str) -> tuple[str, object] | str:
    """`(prompt text, image)` to translate `row[source]` into `target`, or the reason the row is skipped for that pair
    (`missing_image`, `empty_source`, `empty_reference`). One rule for `towervision eval multi30k` and the lmms-eval
    task."""
    image = decode_image(row["image"])
    if image is None:
        return "missing_image"
    if not (row[source] or "").strip():
        return "empty_source"
    if not (row[target] or "").strip():
        return "empty_reference"
    return translation_prompt(row[source], language_name(target), language_name(source)), image


def evaluate_multi30k(
    model,
    processor,
    split,
    result: RunResult,
    pairs,
    batch_size=8,
    max_new_tokens=256,
    limit=None,
    comet_model: str | None = None,
):
    """Fill `result` with per-pair xCOMET (headline), chrF and BLEU; return the per-item translations."""
    require_columns(split, ["image"], "Multi30K")
    check_pairs(split, pairs)
    predictions, table = [], {}
    metric = "xcomet" if comet_model and "xcomet" in comet_model.lower() else "comet"
    for source, target in pairs:
        pair = f"{source}-{target}"
        if language_code(source) is None or language_code(target) is None:
            result.skip("unknown_language", split.num_rows)
            result.notes.append(f"pair {pair!r}: unknown language code, skipped")
            continue
        if source not in split.column_names or target not in split.column_names:
            result.skip("pair_not_in_data", split.num_rows)
            result.notes.append(f"pair {pair!r}: no {source!r}/{target!r} column in {split.column_names}, skipped")
            continue
        sources, references, hypotheses, skipped = [], [], [], 0
        images = undecoded(split, "image")
        for rows in iter_rows(images, 4 * batch_size, limit, desc=f"multi30k {pair}", result=result):
            prompts, kept = [], []
            for row in rows:
                item = prepare_item(row, source, target)
                if isinstance(item, str):
                    result.skip(item)
                    skipped += 1
                else:
                    prompts.append(user_prompt(item[0], [item[1]]))
                    kept.append(row)
            outputs = generate(model, processor, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
            for row, output in zip(kept, outputs):
                sources.append(row[source])
                references.append(row[target])
                hypotheses.append(output)
                predictions.append(
                    {"pair": pair, "source": row[source], "reference": row[target], "translation": output}
                )
        if not hypotheses:
            table[pair] = {"n": 0, "skipped": skipped}
            continue
        score = None
        if comet_model:
            score = _comet_or_note(result, pair, comet_model, sources, hypotheses, references, batch_size)
        table[pair] = {metric: None if score is None else 100 * score}  # the headline comes first
        table[pair] |= translation_metrics(hypotheses, references, language_code(target))
        table[pair] |= {"n": len(hypotheses), "skipped": skipped, "empty_outputs": sum(not h for h in hypotheses)}
    result.tables["headline"] = {metric: {pair: row.get(metric) for pair, row in table.items()}}
    result.tables["language pair"] = table
    result.notes.append(
        f"headline: {metric} ({comet_model or 'not run: --no-comet'}) system score x 100, as the paper's Table 2; "
        "bleu / chrf: sacrebleu corpus scores (default settings) reported beside it; empty translations are kept "
        "and scored; skipped counts are per pair (a row left out of three pairs counts three times)"
    )
    return predictions


def _comet_or_note(result, pair, comet_model, sources, hypotheses, references, batch_size):
    try:
        return comet_system_score(sources, hypotheses, references, comet_model, batch_size=batch_size)
    except ImportError as error:
        note = f"COMET skipped: unbabel-comet cannot be imported ({error}); pip install 'towervision-hf[comet]'"
        if note not in result.notes:
            result.notes.append(note)
        return None
    except Exception as error:  # gated checkpoint, no network, out of memory: report, keep the other metrics
        result.notes.append(f"COMET ({comet_model}) failed for {pair}: {type(error).__name__}: {error}")
        return None
