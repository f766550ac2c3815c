"""Quitting napari while a widget's job runs, in a fresh Python process."""

from __future__ import annotations

import os
import subprocess
import sys


def quit_when_running(job: str) -> str:
    """Script lines that quit napari once ``widget``'s job ``job`` ran an epoch (or for 2 s).

    Appended to a script that defined ``napari``, ``QTimer``, ``time``, ``viewer`` and
    ``widget`` and started the job; it prints what :func:`run_and_quit` checks.
    """
    return f"""
started = time.monotonic()


def quit_when_training():
    if widget.plot.epochs or time.monotonic() - started > 2.0:
        print("running at quit:", widget.jobs.running("{job}"), "epochs:", len(widget.plot.epochs))
        viewer.window._qt_window.close(quit_app=True)
    else:
        QTimer.singleShot(50, quit_when_training)


QTimer.singleShot(50, quit_when_training)
napari.run()
print("quit cleanly")
"""


def run_and_quit(script: str, tmp_path, *, expect_running: bool = True) -> None:
    """Run ``script`` (it starts a job, then quits napari) and assert a clean exit.

    The script prints ``running at quit: True`` when the job was still running
    as it quit (checked when ``expect_running``) and ``quit cleanly`` at the end.
    A clean exit is status 0 and no Qt "has been deleted", abort or traceback on stderr.
    """
    env = {**os.environ, "SEGLAB_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if expect_running:
        assert "running at quit: True" in done.stdout
    assert "quit cleanly" in done.stdout
    for bad in ("has been deleted", "Abort", "Traceback"):
        assert bad not in done.stderr
