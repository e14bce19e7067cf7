"""CC-OCR multilingual text reading on footnote 5's 7 languages, with lmms-eval's CC-OCR task (the paper names the
subset and the languages, not the metric).

lmms-eval ships `cc_ocr_multi_lan_ocr` over all 10 languages of CC-OCR's `multi_lan_ocr` subset; the TowerVision paper
reports German, French, Italian, Russian, Spanish, Korean and Portuguese. Our task `towervision_cc_ocr_multi_lan`
(`lmms_tasks/towervision_cc_ocr/`) is lmms-eval's task with only those rows kept, so prompts, decoding and the
official macro / micro F1 (mean over the languages; which one the paper reports is not stated) are lmms-eval's own:

    lmms-eval --model towervision --model_args pretrained=DIR --include_path LMMS_TASKS_DIR \\
        --tasks towervision_cc_ocr_multi_lan

(`python -c "from towervision_hf.evaluation.cc_ocr import LMMS_TASKS_DIR; print(LMMS_TASKS_DIR)"` prints the path.)
"""

from pathlib import Path

from .languages import CC_OCR_LANGUAGES


LMMS_TASKS_DIR = str(Path(__file__).parent / "lmms_tasks")


def paper_language_docs(dataset):
    """The rows of CC-OCR's `multi_lan_ocr` in the paper's 7 languages (the language is the row's `split` value).

    Raises `ValueError` naming the languages found when none of the paper's languages is present.
    """
    if "split" not in dataset.column_names:
        raise ValueError(f"CC-OCR multi_lan_ocr rows need a 'split' (language) column, got {dataset.column_names}")
    kept = dataset.filter(lambda split: split in CC_OCR_LANGUAGES, input_columns="split")
    if kept.num_rows == 0:
        found = sorted(set(dataset["split"]))
        raise ValueError(f"no CC-OCR rows in the paper's languages {CC_OCR_LANGUAGES}; the data has {found}")
    return kept
