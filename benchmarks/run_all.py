# `make bench`: runs every benchmark and writes their fresh output into docs/benchmarks.md.
"""Run all benchmarks and refresh docs/benchmarks.md.

Each section of docs/benchmarks.md that shows a benchmark's output holds it between two
markers::

    <!-- bench:NAME -->
    ...replaced by this script...
    <!-- /bench:NAME -->

This script runs ``benchmarks/bench_NAME.py`` for every marker pair, in one go (so the peers of
each benchmark are measured in the same run, and all benchmarks on the same day and machine),
and replaces what stands between the markers with the command and its output. The prose around
the markers — what is measured and how — is kept. The header block ``<!-- bench:machine -->``
gets the machine, the Python version and the versions of the libraries compared.

Usage: ``.venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
MARKER = re.compile(
    r"(<!-- bench:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S
)
PACKAGES = ("holysheep-trio", "trio", "httpx2", "h11", "openai", "httpx-sse", "sseclient-py")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_block() -> str:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    today = datetime.date.today().isoformat()
    return (
        f"Measured on {today}: {cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}, CPython {platform.python_version()}.\n"
        f"Versions: {', '.join(versions)}.\n"
        "Reproduce: `make bench` (all of them; rewrites this page) or the command shown in each "
        "section.\n"
    )


def run(name: str, quick: bool) -> str:
    script = ROOT / "benchmarks" / f"bench_{name}.py"
    command = [sys.executable, str(script.relative_to(ROOT))]
    if quick:
        command.append("--quick")
    shown = " ".join([".venv/bin/python", *command[1:]])
    print(f"running {shown}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"{shown} failed with exit code {result.returncode}")
    print(f"  done in {took:.0f} s", flush=True)
    output = result.stdout.rstrip()
    return f"```console\n$ {shown}\n{output}\n```\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run all benchmarks; refresh docs/benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks")
    args = parser.parse_args()
    text = DOC.read_text(encoding="utf-8")
    names = [m.group("name") for m in MARKER.finditer(text) if m.group("name") != "machine"]
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            raise SystemExit(f"no marker in {DOC.name} for: {', '.join(sorted(unknown))}")
        names = [name for name in names if name in args.only]
    fresh = {"machine": machine_block()}
    for name in names:
        fresh[name] = run(name, args.quick)

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in fresh:
            return match.group(0)
        return f"{match.group(1)}{fresh[name]}<!-- /bench:{name} -->"

    DOC.write_text(MARKER.sub(replace, text), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
