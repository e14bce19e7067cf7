"""Functions of `towervision_cc_ocr_multi_lan`: lmms-eval's own CC-OCR functions, on the paper's 7 languages."""

from lmms_eval.tasks.cc_ocr.utils import (  # noqa: F401 (named by the task YAML)
    cc_ocr_agg_ocr_macro_f1,
    cc_ocr_agg_ocr_micro_f1,
    cc_ocr_doc_to_target,
    cc_ocr_doc_to_text,
    cc_ocr_doc_to_visual,
    cc_ocr_process_results,
)

from towervision_hf.evaluation.cc_ocr import paper_language_docs  # noqa: F401
