"""Run every ``benchmarks/bench_*.py`` script and collect their result lines.

Usage: ``python benchmarks/run.py [--quick] [name ...]``; ``make bench`` calls it.
Results are also written to ``bench-output/results.txt``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("-")]
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    out_dir = HERE.parent / "bench-output"
    out_dir.mkdir(exist_ok=True)
    lines, failed = [], []
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stdout.write(proc.stderr[-4000:])
            failed.append(script.stem)
        lines += [ln for ln in proc.stdout.splitlines() if ": ours " in ln]
    (out_dir / "results.txt").write_text("\n".join(lines) + "\n")
    print(f"\n{len(lines)} results written to {out_dir / 'results.txt'}")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
