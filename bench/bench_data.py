"""Throughput and exactly-once checks of `towervision data synth / translate / filter`, in one run.

Parts (`--part`, default all but `filter`):

    synth       `synth` against bench/chat_server.py on 127.0.0.1 (`--latency` per answer, 3 % of first attempts
                throttled with a 429 + Retry-After and 3 % failed with a 500), one request at a time vs the default
                concurrency: requests/s, the speed-up and whether both wrote the same bytes
    faults      `synth` with 15 % 429s, 15 % 500s, 10 % dropped connections (first attempts), 3 % requests that
                always fail and 3 % answers cut at the token limit: every request is answered or counted, and the
                answered rows are exactly the fault-free run's rows minus the failed and cut ones
    translate   `translate` of `--rows` caption rows into three languages: an uninterrupted run (rows/s), a run in a
                subprocess killed (SIGKILL) at a random point then run again (compared byte for byte with the
                uninterrupted run), and three shards (compared with it too). Without `--model` a tiny random Gemma2
                is built (CPU smoke); with `--model` it measures a real Tower+ (`--backend vllm` on a GPU)
    filter      `filter` of the translate part's output with `--qe` (COMETKiwi; needs the comet extra and a GPU for
                real figures): rows/s

    PYTHONPATH=src python bench/bench_data.py                                   # CPU, a few minutes
    PYTHONPATH=src python bench/bench_data.py --part translate filter --model Unbabel/Tower-Plus-2B --backend vllm \\
        --rows 4000 --qe Unbabel/wmt22-cometkiwi-da                             # GPU

Results are printed and written to `WORKDIR/bench_data.json`.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chat_server import ChatServer, question_rows

from towervision_hf.data.cli import DEFAULT_CONCURRENCY
from towervision_hf.data.cli import main as data_main
from towervision_hf.data.jsonl import write_jsonl
from towervision_hf.data.schema import image_block, make_sample, media, message


CLI = "import sys, towervision_cli; sys.exit(towervision_cli.main())"
SENTENCES = (
    "A red bicycle leans against a brick wall under a green awning.",
    "Two people sit at a small table, one reading a newspaper.",
    "The street is wet and reflects the yellow light of a shop window.",
    "In the background a bus waits at the corner while a cyclist passes.",
)


def run(argv) -> float:
    """`towervision data ARGV` in this process; its wall time in seconds."""
    start = time.perf_counter()
    code = data_main([str(arg) for arg in argv])
    if code:
        raise SystemExit(f"towervision data {' '.join(map(str, argv))} exited {code}")
    return time.perf_counter() - start


def output(folder) -> dict:
    return {path.name: path.read_bytes() for path in sorted(Path(folder).glob("data*.jsonl"))}


def part_synth(args, work: Path) -> dict:
    write_jsonl(question_rows(args.questions), work / "questions")
    result = {}
    for concurrency in (1, DEFAULT_CONCURRENCY):  # a fresh server each: the same requests get the same faults
        with ChatServer(latency=args.latency, faults={"throttle": 0.03, "error": 0.03}, retry_after=0.2) as server:
            out = work / f"synth-c{concurrency}"
            wall = run(
                [
                    "synth",
                    "--source",
                    work / "questions",
                    "--endpoint",
                    server.endpoint,
                    "--model",
                    "m",
                    "--concurrency",
                    concurrency,
                    "--out",
                    out,
                ]
            )
        requests = json.loads((out / "report.json").read_text())["total"]
        result[f"concurrency {concurrency}: requests/s"] = round(requests / wall, 2)
        result[f"concurrency {concurrency}: server statuses"] = {str(code): n for code, n in server.statuses.items()}
    result["requests"] = requests
    result["speed-up"] = round(
        result[f"concurrency {DEFAULT_CONCURRENCY}: requests/s"] / result["concurrency 1: requests/s"], 1
    )
    result["same answers"] = output(work / "synth-c1") == output(work / f"synth-c{DEFAULT_CONCURRENCY}")
    return result


def part_faults(args, work: Path) -> dict:
    write_jsonl(question_rows(args.questions), work / "questions")
    faults = {"throttle": 0.15, "error": 0.15, "drop": 0.10, "broken": 0.03, "cut": 0.03}
    with ChatServer(latency=0.05) as server:
        run(
            [
                "synth",
                "--source",
                work / "questions",
                "--endpoint",
                server.endpoint,
                "--model",
                "m",
                "--out",
                work / "clean",
            ]
        )
    with ChatServer(latency=0.05, faults=faults, retry_after=0.1) as server:
        run(
            [
                "synth",
                "--source",
                work / "questions",
                "--endpoint",
                server.endpoint,
                "--model",
                "m",
                "--out",
                work / "faulty",
            ]
        )
        lost = {key for key in server.attempts if server.fault(key) in ("broken", "cut")}
        requests, statuses = len(server.attempts), server.statuses
    report = json.loads((work / "faulty" / "report.json").read_text())["sources"]["synthetic"]
    clean = [json.loads(line) for line in (work / "clean" / "data.jsonl").read_text().splitlines()]
    faulty = [json.loads(line) for line in (work / "faulty" / "data.jsonl").read_text().splitlines()]
    expected = [
        row
        for row in clean
        if f"{row['synthesis']['prompt']}\n{row['messages'][1]['content'][-1]['text']}" not in lost
    ]
    return {
        "requests": requests,
        "server statuses": {str(status): n for status, n in statuses.items()},
        "answered": report["kept"],
        "counted failed / cut": report["skipped"],
        "every request answered or counted": report["kept"] + sum(report["skipped"].values()) == requests,
        "answered rows == fault-free rows minus failed and cut": faulty == expected,
    }


def caption_rows(count: int) -> list[dict]:
    """Caption rows of PixMo-Cap-like length (about 70 words), one small image each."""
    rows = []
    for index in range(count):
        caption = " ".join(SENTENCES[(index + shift) % len(SENTENCES)] for shift in range(5))
        rows.append(
            make_sample(
                f"cap{index}",
                "pixmo_cap",
                "en",
                [message("user", image_block(), "Describe the image."), message("assistant", caption)],
                images=[media(url=f"https://example.com/{index}.jpg")],
            )
        )
    return rows


def tiny_tower(path: Path) -> str:
    from transformers import Gemma2ForCausalLM

    from towervision_hf.checkpoint.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    Gemma2ForCausalLM(tiny_config(tokenizer).text_config).save_pretrained(path)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
        "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    tokenizer.save_pretrained(path)
    return str(path)


def part_translate(args, work: Path) -> dict:
    write_jsonl(caption_rows(args.rows), work / "captions")
    model = args.model or tiny_tower(work / "tiny-tower")
    argv = [
        "translate",
        "--source",
        work / "captions",
        "--langs",
        "de,ko,pt-BR",
        "--mode",
        "caption",
        "--model",
        model,
        "--backend",
        args.backend,
        "--max-new-tokens",
        args.max_new_tokens,
        "--chunk-size",
        args.chunk_size,
        *(["--tensor-parallel-size", args.tensor_parallel_size] if args.tensor_parallel_size else []),
    ]
    wall = run([*argv, "--out", work / "whole"])
    whole = output(work / "whole")
    result = {
        "model": model,
        "rows in": args.rows,
        "rows out": sum(data.count(b"\n") for data in whole.values()),
        "wall s (with model load)": round(wall, 1),
    }
    result["rows out/s"] = round(result["rows out"] / wall, 2)
    # killed at a random point of the first half (once this many bytes are written), then the same command again
    threshold = random.Random(args.seed).randrange(1, len(whole["data.jsonl"]) // 2)
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "data", *map(str, argv), "--out", str(work / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    data = work / "killed" / "data.jsonl"
    while process.poll() is None and (not data.exists() or data.stat().st_size < threshold):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    result["killed mid-way"] = process.returncode == -signal.SIGKILL
    result["rows written at the kill (checkpointed or not)"] = data.read_bytes().count(b"\n")
    run([*argv, "--out", work / "killed"])
    result["killed + resumed == uninterrupted (bytes)"] = output(work / "killed") == whole
    for index in range(3):
        run([*argv, "--num-shards", 3, "--shard-index", index, "--out", work / "shards"])
    result["3 shards == uninterrupted (bytes)"] = b"".join(output(work / "shards").values()) == whole["data.jsonl"]
    return result


def part_filter(args, work: Path) -> dict:
    if not (work / "whole").exists():
        raise SystemExit("the filter part reads the translate part's output: run --part translate filter")
    wall = run(["filter", work / "whole", "--qe", args.qe, "--out", work / "filtered"])
    report = json.loads((work / "filtered" / "report.json").read_text())
    scored = sum(source["read"] for source in report["sources"].values())
    return {
        "qe": args.qe,
        "rows scored": scored,
        "wall s (with model load)": round(wall, 1),
        "rows/s": round(scored / wall, 2),
    }


PARTS = {"synth": part_synth, "faults": part_faults, "translate": part_translate, "filter": part_filter}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=PARTS, default=["synth", "faults", "translate"])
    parser.add_argument("--workdir", help="default: a temporary folder")
    parser.add_argument("--questions", type=int, default=150, help="question rows for synth (4 questions per 3)")
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per answer (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=48, help="caption rows to translate (default: %(default)s)")
    parser.add_argument("--model", help="Tower+ model to translate with (default: a tiny random one, CPU)")
    parser.add_argument("--backend", default="transformers", choices=("transformers", "vllm"))
    parser.add_argument("--tensor-parallel-size", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--qe", default="Unbabel/wmt22-cometkiwi-da")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill point (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as temporary:
        work = Path(args.workdir or temporary)
        results = {}
        for part in args.part:
            (work / part).mkdir(parents=True, exist_ok=True)
            results[part] = PARTS[part](args, work / ("translate" if part == "filter" else part))
            print(f"{part}: {json.dumps(results[part], indent=2)}", flush=True)
        (work / "bench_data.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
