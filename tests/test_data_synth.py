"""`data synth` against a local OpenAI-compatible server: requests in flight, retries with backoff and Retry-After,
bounded attempts, and every answer either written or counted (failed, cut)."""

import json

from data_helpers import ChatServer, chat_server, question_rows

from towervision_hf.data.cli import main
from towervision_hf.data.jsonl import read_jsonl, write_jsonl
from towervision_hf.data.report import BuildReport
from towervision_hf.data.synth import ChatClient, synthesize_answers


def synthesize(server, rows, concurrency=4, max_retries=3, timeout=30.0):
    report = BuildReport("synth")
    client = ChatClient(server.endpoint, timeout=timeout, max_retries=max_retries)
    answered = list(
        synthesize_answers(rows, client, "m", seed=3, report=report, concurrency=concurrency, chunk_size=4)
    )
    return answered, report.to_dict()["sources"].get("synthetic", {"kept": 0, "skipped": {}})


def test_requests_are_in_flight_together_with_the_answers_of_one_at_a_time():
    rows = question_rows(12)  # 16 requests
    with ChatServer(latency=0.3) as server:
        concurrent, _ = synthesize(server, rows, concurrency=4)
        assert server.max_in_flight == 4
    with ChatServer() as server:
        sequential, _ = synthesize(server, rows, concurrency=1)
        assert server.max_in_flight == 1
    assert concurrent == sequential and len(concurrent) == 16
    assert all(
        row["messages"][2]["content"][0]["text"]
        == chat_server.answer_text(f"{row['synthesis']['prompt']}\n{row['messages'][1]['content'][-1]['text']}")
        for row in concurrent
    )


def test_throttled_failed_and_dropped_requests_are_retried_until_answered():
    rows = question_rows(24)  # 32 requests
    with ChatServer() as server:
        clean, _ = synthesize(server, rows)
    faults = {"throttle": 0.25, "error": 0.25, "drop": 0.25}
    with ChatServer(faults=faults, retry_after=0.01) as server:
        answered, counts = synthesize(server, rows)
        statuses = server.statuses
        retried = sum(len(times) > 1 for times in server.attempts.values())
    assert statuses[429] and statuses[500] and statuses["dropped"]  # each fault was injected
    assert retried == statuses[429] + statuses[500] + statuses["dropped"]
    assert answered == clean and counts["skipped"] == {}


def test_retry_after_is_honoured():
    with ChatServer(faults={"throttle": 1.0}, retry_after=0.4) as server:
        answered, _ = synthesize(server, question_rows(1))  # two questions
        attempts = list(server.attempts.values())
    assert len(answered) == 2 and all(len(times) == 2 and times[1] - times[0] >= 0.4 for times in attempts)


def test_requests_that_finally_fail_or_time_out_are_counted_and_the_rest_written():
    rows = question_rows(12)
    with ChatServer(faults={"broken": 0.25, "hang": 0.25}, hang=3.0) as server:
        answered, counts = synthesize(server, rows, max_retries=1, timeout=1.0)
        broken = [key for key in server.attempts if server.fault(key) == "broken"]
        hung = [key for key in server.attempts if server.fault(key) == "hang"]
        assert broken and hung and all(len(server.attempts[key]) == 2 for key in broken + hung)  # one retry each
    # a request that hangs past the timeout is answered by its retry; a broken one fails after its retry
    assert counts["skipped"] == {"request_failed": len(broken)} and len(answered) == 16 - len(broken)
    details = [example["detail"] for example in counts["examples"]]
    assert all("500" in detail for detail in details)


def test_answers_cut_at_the_token_limit_are_dropped_and_counted(tmp_path):
    write_jsonl(question_rows(12), tmp_path / "questions")
    with ChatServer(faults={"cut": 0.3}) as server:
        assert (
            main(
                [
                    "synth",
                    "--source",
                    str(tmp_path / "questions"),
                    "--endpoint",
                    server.endpoint,
                    "--model",
                    "m",
                    "--max-tokens",
                    "64",
                    "--out",
                    str(tmp_path / "synth"),
                ]
            )
            == 0
        )
        cut = {key for key in server.attempts if server.fault(key) == "cut"}
    rows = list(read_jsonl(tmp_path / "synth"))
    report = json.loads((tmp_path / "synth" / "report.json").read_text())
    assert cut and report["sources"]["synthetic"]["skipped"] == {"cut_answer": len(cut)}
    assert len(rows) == 16 - len(cut) == report["total"]
    written = {f"{row['synthesis']['prompt']}\n{row['messages'][1]['content'][-1]['text']}" for row in rows}
    assert not written & cut
    assert all("max_tokens=64" in example["detail"] for example in report["sources"]["synthetic"]["examples"])
