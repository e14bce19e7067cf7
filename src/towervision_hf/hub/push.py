"""`towervision push CKPT --repo-id ORG/NAME`: stage, load-check and upload a checkpoint in one Hub commit.

    towervision push out/stage2 --repo-id my-org/TowerVision-2B-ft --private --dry-run
    towervision push out/stage2 --repo-id my-org/TowerVision-2B-ft --revision v1 --create-pr

The upload happens only after the staged folder passed the load check (`load_check.py`). It is one commit that
adds every staged file and deletes the repo's stale model files (old shards, old code or processor files) that the
staged folder no longer has; other files in the repo (images, notes) are kept.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..checkpoint.output import check_output
from ..errors import exits_on_error


DEFAULT_CACHE_DIR = Path.home() / ".cache" / "towervision-hf"
EXIT_UPLOAD_FAILED = 3  # 1: the load check failed, 2: the checkpoint cannot be staged or the upload is refused


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="towervision push",
        description="Stage a TowerVision checkpoint as a trust_remote_code Hub repo, check that it loads without "
        "towervision-hf installed, and upload it in one commit.",
        epilog="exit codes: 0 uploaded (or dry run passed), 1 load check failed, 2 cannot stage or upload refused, "
        "3 upload failed (network, authentication, Hub error). Details: docs/publishing.md",
    )
    parser.add_argument("checkpoint", help="checkpoint folder (training output, `towervision convert` output, ...)")
    parser.add_argument("--repo-id", required=True, help="target Hub repo, ORG/NAME")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (refuses a public existing repo)"
    )
    parser.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing directly")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument(
        "--dry-run", action="store_true", help="stop after staging and the load check; keep the folder"
    )
    parser.add_argument("--stage-dir", default=None, help="stage here (must be empty) instead of a temporary folder")
    parser.add_argument(
        "--max-shard-size",
        default=None,
        help="re-shard weight files larger than this (default 5GB, as save_pretrained; 'none' keeps them as they are)",
    )
    parser.add_argument("--processor", default=None, help="take the processor from this folder instead of CKPT")
    parser.add_argument("--license", default=None, help="model card license (default cc-by-nc-sa-4.0)")
    parser.add_argument(
        "--base-model", action="append", default=None, help="Hub id this model derives from (repeatable)"
    )
    parser.add_argument("--dataset", action="append", default=None, help="Hub id of its training data (repeatable)")
    parser.add_argument("--pipeline-tag", choices=("image-text-to-text", "video-text-to-text"), default=None)
    parser.add_argument("--eval-results", action="append", default=[], help="`towervision eval` JSON (repeatable)")
    parser.add_argument("--card-template", default=None, help="Jinja model card template (default: the package's)")
    parser.add_argument(
        "--include-training-state",
        action="store_true",
        help="also upload optimizer, scheduler, RNG and trainer state files (pickles!)",
    )
    parser.add_argument(
        "--check-oldest-transformers",
        action="store_true",
        help="also run the load check under the oldest supported transformers (installed once into ~/.cache)",
    )
    return parser


def upload_staged(
    api,
    staged,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str,
    commit_description: str | None = None,
):
    """Upload the staged folder (a `stage.StagedCheckpoint`) with `api` (a `huggingface_hub.HfApi`) in one commit;
    return its `CommitInfo`.

    Creates the repo if needed (`private`), refuses to put a private upload into an existing public repo, creates
    `revision` from main if it is a new branch, and deletes stale model files of that revision in the same commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    from .stage import REGENERATED_FILES, TRAINING_STATE_PATTERNS, _matches

    stale_patterns = (
        REGENERATED_FILES + TRAINING_STATE_PATTERNS + ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json")
    )
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if private and not api.repo_info(repo_id, repo_type="model").private:
        raise ValueError(f"{repo_id} already exists and is public: refusing a --private upload into it")
    if revision not in (None, "main"):
        api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
    existing = api.list_repo_files(repo_id, repo_type="model", revision=revision)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staged.path / name)) for name in sorted(staged.files)
    ]
    operations += [
        CommitOperationDelete(path_in_repo=name)
        for name in sorted(existing)
        if name not in staged.files and "/" not in name and _matches(name, stale_patterns)
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        commit_description=commit_description,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
    )


@exits_on_error("towervision push")
def main(argv: list[str] | None = None, api=None) -> int:
    """Entry point of `towervision push`; `api` replaces `huggingface_hub.HfApi()` (tests)."""
    args = build_parser().parse_args(argv)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:  # before staging anything: the Hub would only refuse the id at upload time
        validate_repo_id(args.repo_id)
    except HFValidationError as error:
        print(f"towervision push: invalid --repo-id: {error}", file=sys.stderr)
        return 2
    from .card import DEFAULT_LICENSE
    from .load_check import MAX_NEW_TOKENS, check_dtype, reference_outputs, run_load_check
    from .stage import DEFAULT_MAX_SHARD_SIZE, stage_checkpoint
    from .versions import MIN_TRANSFORMERS_VERSION, install_min_transformers

    max_shard_size = args.max_shard_size or DEFAULT_MAX_SHARD_SIZE
    max_shard_size = None if max_shard_size.lower() == "none" else max_shard_size
    try:
        if args.stage_dir is not None:
            check_output(args.stage_dir, [args.checkpoint, args.processor])
        staged = stage_checkpoint(
            args.checkpoint,
            args.stage_dir,
            repo_id=args.repo_id,
            max_shard_size=max_shard_size,
            processor_source=args.processor,
            license=args.license or DEFAULT_LICENSE,
            base_models=args.base_model,
            datasets=args.dataset,
            pipeline_tag=args.pipeline_tag,
            eval_results=args.eval_results,
            include_training_state=args.include_training_state,
            card_template=args.card_template,
        )
    except ValueError as error:
        print(f"towervision push: {error}", file=sys.stderr)
        return 2
    print(f"staged {args.checkpoint} for {args.repo_id} in {staged.path}:\n{staged.listing()}\n")

    start = time.perf_counter()
    dtype = check_dtype(staged.path)
    reference = reference_outputs(staged.path, MAX_NEW_TOKENS, dtype)
    results = [run_load_check(staged.path, max_new_tokens=MAX_NEW_TOKENS, reference=reference, dtype=dtype)]
    if args.check_oldest_transformers:
        side = install_min_transformers(DEFAULT_CACHE_DIR)
        results.append(
            run_load_check(
                staged.path,
                max_new_tokens=MAX_NEW_TOKENS,
                reference=reference,
                dtype=dtype,
                extra_sys_path=[side],
                expected_transformers=MIN_TRANSFORMERS_VERSION,
            )
        )
    for result in results:
        print(result.summary())
    print(f"load check: {time.perf_counter() - start:.0f} s in all (in-process reference included)")
    if not all(result.passed for result in results):
        print(f"towervision push: refusing to upload {staged.path}: it does not load as published", file=sys.stderr)
        return 1

    if args.dry_run:
        print(f"\ndry run: nothing uploaded; the staged folder is {staged.path}")
        return 0
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    versions = ", ".join(result.report["transformers_version"] for result in results)
    try:
        commit = upload_staged(
            api,
            staged,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            create_pr=args.create_pr,
            commit_message=args.commit_message or f"Upload {Path(args.checkpoint).name} with towervision push",
            commit_description="Staged by `towervision push`; loads with trust_remote_code under transformers "
            f"{versions}.",
        )
    except ValueError as error:
        print(f"towervision push: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # network, authentication, permissions, Hub errors: one line, not a traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"towervision push: upload to {args.repo_id} failed: {type(error).__name__}: {message}", file=sys.stderr)
        return EXIT_UPLOAD_FAILED
    finally:
        if args.stage_dir is None:  # a temporary staging folder never outlives the upload attempt
            shutil.rmtree(staged.path, ignore_errors=True)
    print(f"uploaded: {getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', commit)}")
    return 0
