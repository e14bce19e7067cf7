"""Quality filtering of translated rows with COMETKiwi (reference-free QE, `pip install 'towervision-hf[comet]'`).

Each translated segment (translate.py) is scored with `{src, mt}`; a row's score is the minimum of its segments'
scores (one bad turn rejects the row). Scores are stored in the row as `translation.qe = {model, scores, score}`
and reused on later runs (unless `rescore`, or the stored scores come from another QE model), so the threshold can
be changed without scoring again. Rows without a `translation` (kept in English) pass unscored.
"""

import os

from .report import BuildReport


DEFAULT_QE_MODEL = "Unbabel/wmt22-cometkiwi-da"
DEFAULT_THRESHOLD = 0.85


class CometKiwiScorer:
    """`scorer(sources, translations) -> scores` with an `unbabel-comet` QE checkpoint (a Hub id or a .ckpt path).

    Run it as one process per GPU on a shard of the data: with gpus > 1 COMET starts DDP and exits non-zero ranks.
    """

    def __init__(self, model: str = DEFAULT_QE_MODEL, batch_size: int = 64, gpus: int | None = None):
        try:
            from comet import download_model, load_from_checkpoint
        except ImportError:
            raise ImportError(
                "COMETKiwi filtering needs unbabel-comet: pip install 'towervision-hf[comet]' (or unbabel-comet)"
            ) from None
        import torch

        if os.path.exists(model):
            checkpoint = model
        else:
            try:
                checkpoint = download_model(model)
            except KeyError as error:
                raise RuntimeError(
                    f"could not download {model}: the COMETKiwi checkpoints are gated on the Hugging Face Hub; accept "
                    f"the license on the model page and authenticate (HF_TOKEN or `hf auth login`). "
                    f"COMET said: {error}"
                ) from None
        self.model = load_from_checkpoint(checkpoint)
        self.batch_size = batch_size
        self.gpus = (1 if torch.cuda.is_available() else 0) if gpus is None else gpus

    def __call__(self, sources: list[str], translations: list[str]) -> list[float]:
        samples = [{"src": source, "mt": translation} for source, translation in zip(sources, translations)]
        output = self.model.predict(samples, batch_size=self.batch_size, gpus=self.gpus, progress_bar=True)
        return [float(score) for score in output.scores]


def score_rows(rows, scorer, model_name: str, rescore: bool = False) -> list[dict]:
    """Attach `translation.qe` to every translated row, scoring only rows that have no usable scores."""
    rows = [dict(row) for row in rows]
    pending = []
    for row in rows:
        translation = row.get("translation")
        if not translation:
            continue
        qe = translation.get("qe")
        stale = not qe or qe.get("model") != model_name or len(qe.get("scores", [])) != len(translation["segments"])
        if rescore or stale:
            pending.append(row)
    sources = [segment["src"] for row in pending for segment in row["translation"]["segments"]]
    translations = [segment["mt"] for row in pending for segment in row["translation"]["segments"]]
    scores = scorer(sources, translations) if sources else []
    if len(scores) != len(sources):
        raise RuntimeError(f"QE scorer returned {len(scores)} scores for {len(sources)} segments")
    offset = 0
    for row in pending:
        count = len(row["translation"]["segments"])
        segment_scores = [float(score) for score in scores[offset : offset + count]]
        offset += count
        row["translation"] = {
            **row["translation"],
            "qe": {"model": model_name, "scores": segment_scores, "score": min(segment_scores)},
        }
    return rows


def split_by_threshold(rows, threshold: float = DEFAULT_THRESHOLD, report: BuildReport | None = None):
    """(kept, rejected): a scored row is kept when its score >= threshold; unscored (English) rows are kept.

    `report` (optional) counts kept rows per language and rejected rows as `below_threshold` per source.
    """
    kept, rejected = [], []
    for row in rows:
        qe = (row.get("translation") or {}).get("qe")
        source = row.get("source") or "input"
        if qe is not None and qe["score"] < threshold:
            rejected.append(row)
            if report is not None:
                report.skip(source, "below_threshold", f"{row['id']}: {qe['score']:.4f} < {threshold}")
        else:
            kept.append(row)
            if report is not None:
                report.keep(source, row["language"])
    return kept, rejected
