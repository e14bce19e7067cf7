"""Wall time of `towervision COMMAND --help` for every command, each run in a fresh Python process as a user runs it
(interpreter start-up included), and the lines each help prints.

    python bench/bench_cli_help.py --repeats 5
"""

import argparse
import statistics
import subprocess
import sys
import time

from towervision_cli import COMMANDS


RUN_COMMAND = "import sys, towervision_cli; sys.exit(towervision_cli.main())"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (default: %(default)s)")
    args = parser.parse_args()
    print(f"{'command':<10}{'median s':>10}{'min s':>8}{'max s':>8}{'lines':>7}")
    for name in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", RUN_COMMAND, name, "--help"], capture_output=True, text=True, check=True
            )
            times.append(time.perf_counter() - start)
        lines = len(result.stdout.splitlines())
        print(f"{name:<10}{statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}{lines:>7}")


if __name__ == "__main__":
    main()
