"""What a person sees: summary and progress lines, console.log, stop signals, hints and missing packages."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import HANG_GUARD_S, ROOT, TINY, launch
from vsml import environment
from vsml.console import Console, evaluation_line, format_duration, percent_shares
from vsml.preemption import StopRequest
from vsml.runlog import CONSOLE, WANDB_RUN_ID

SUMMARY = re.compile(
    r"^gen (\d+)/(\d+) · meta-loss [-\d.e+]+ · ([\d.e-]+) s/gen "
    r"\(eval (\d+)% · comm (\d+)% · update (\d+)%\)( · ETA \S+| · done in \S+)$"
)
PROGRESS = re.compile(r"^gen (\d+)/(\d+) · [\d.e-]+ s/gen · ETA (\S+)$")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0s"), (42.4, "42s"), (412, "6m52s"), (3600 + 7 * 60 + 5, "1h07m"), (2 * 86400 + 5 * 3600, "2d05h")],
)
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=6).filter(
        lambda values: sum(values) > 1e-3
    )
)
def test_percent_shares_add_to_100_and_stay_within_a_point(values):
    shares = percent_shares(values)
    assert sum(shares) == 100
    for share, value in zip(shares, values):
        assert abs(share - 100 * value / sum(values)) < 1


def _console(tmp_path, progress_seconds=30.0):
    stream, clock = io.StringIO(), FakeClock()
    return Console(tmp_path / CONSOLE, stream=stream, progress_seconds=progress_seconds, clock=clock), stream, clock


def _generation(console, clock, seconds, evaluate=0.8, communicate=0.05, update=0.15, loss=2.0):
    clock.now += seconds
    console.progress(
        {
            "meta_loss": loss,
            "time/evaluate": evaluate * seconds,
            "time/communicate": communicate * seconds,
            "time/update": update * seconds,
        }
    )


def test_summary_line_has_the_total_the_time_per_generation_its_shares_and_an_eta(tmp_path):
    console, stream, clock = _console(tmp_path)
    console.start(done=0, total=100)
    _generation(console, clock, 30.0)  # the first generation compiles: never in a rate
    for _ in range(10):
        _generation(console, clock, 0.5)
    console.row({"step": 10, "meta_loss": 2.0736, "time": 35.0})
    line = stream.getvalue().splitlines()[-1]
    eta = format_duration(0.5 * (100 - 11))  # 11 generations done, 0.5 s each after the first
    assert line == f"gen 10/100 · meta-loss 2.074 · 0.5 s/gen (eval 80% · comm 5% · update 15%) · ETA {eta}"
    assert "first generation took 30.0 s (compiling included)" in stream.getvalue()


def test_last_summary_line_says_how_long_the_whole_run_took(tmp_path):
    console, stream, clock = _console(tmp_path)
    console.start(done=8, total=10)  # a resumed run: the total time comes from the row
    _generation(console, clock, 9.0)
    _generation(console, clock, 1.0)
    console.row({"step": 9, "meta_loss": 1.5, "time": 754.0})
    assert stream.getvalue().splitlines()[-1].endswith("· done in 12m34s")


def test_evaluation_results_get_their_own_line():
    row = {
        "step": 250,
        "meta_loss": 2.0,
        "eval/digits/loss": 1.7,
        "eval/digits/accuracy": 0.443,
        "eval/digits/final_loss": 1.2,
        "eval/digits/final_accuracy": 0.5,
        "eval/mnist_offline/accuracy": 0.19,
        "eval/mnist_offline/final_accuracy": 0.1875,
    }
    assert evaluation_line(row) == (
        "meta-test gen 250 · digits 44.3% (last step 50.0%) · mnist_offline 19.0% (last step 18.8%)"
    )
    assert evaluation_line({"step": 3, "meta_loss": 2.0}) is None


def test_without_a_terminal_progress_comes_as_periodic_lines_also_in_console_log(tmp_path):
    console, stream, clock = _console(tmp_path, progress_seconds=60.0)
    console.start(done=0, total=1000)
    _generation(console, clock, 20.0)
    for _ in range(400):
        _generation(console, clock, 1.0)
    console.close()
    progress = [PROGRESS.match(line) for line in stream.getvalue().splitlines()]
    progress = [match for match in progress if match]
    # one line per minute of generations: 400 s of them
    assert 5 <= len(progress) <= 7
    for match in progress:
        done = int(match.group(1)) + 1  # generations are numbered from 0
        assert match.group(2) == "1000" and match.group(3) == format_duration(1000 - done)
    assert (tmp_path / CONSOLE).read_text() == stream.getvalue()


def test_piped_run_prints_progress_lines_console_log_holds_them_and_resume_continues_it(tmp_path):
    run_dir = tmp_path / "run"
    result = launch(
        "--run_dir",
        run_dir,
        "--config",
        *TINY,
        "training.iterations=6",
        "summary.frequency=4",
        "evaluation.frequency=4",
        "logging.progress_seconds=0",
        "logging.wandb=offline",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    logged = (run_dir / CONSOLE).read_text().splitlines()
    assert logged == lines[:-1] and lines[-1].startswith("done: 6 generations")
    assert "loading data: digits (training), digits (meta-test)…" in lines
    assert any(line.startswith("first generation took ") for line in lines)
    summary_lines = [line for line in lines if line.startswith("gen ") and "meta-loss" in line]
    assert re.match(r"^gen 0/6 · meta-loss [\d.]+$", summary_lines[0])  # timed from the second generation on
    summaries = [SUMMARY.match(line) for line in summary_lines[1:]]
    assert all(summaries), summary_lines
    assert [int(m.group(1)) for m in summaries] == [4, 5] and all(m.group(2) == "6" for m in summaries)
    for match in summaries:
        assert sum(int(match.group(i)) for i in (4, 5, 6)) == 100
    assert summaries[-1].group(7).startswith(" · done in ")
    progress = [PROGRESS.match(line) for line in lines]
    assert [int(m.group(1)) for m in progress if m] == [1, 2, 3, 4]  # every generation but the first and last
    assert any(line.startswith("meta-test gen 4 · digits ") for line in lines)
    # the final generation gets a metrics row though 5 is no multiple of summary.frequency
    assert [json.loads(row)["step"] for row in (run_dir / "metrics.jsonl").read_text().splitlines()] == [0, 4, 5]

    # Resumed: the same wandb run, console.log continued, no second run directory.
    run_id = (run_dir / WANDB_RUN_ID).read_text().strip()
    resumed = launch("--resume", run_dir, "--config", "training.iterations=8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / CONSOLE).read_text().splitlines() == logged + resumed.stdout.splitlines()[:-1]
    assert (run_dir / WANDB_RUN_ID).read_text().strip() == run_id
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in folders)
    assert [path.name for path in tmp_path.iterdir()] == ["run"]


def _read_until(stream, predicate, seen: list[str], timeout: float) -> str | None:
    """Reads lines of ``stream`` (appending them to ``seen``) until one satisfies ``predicate``."""
    found = {}

    def reader():
        for line in stream:
            seen.append(line.rstrip("\n"))
            if predicate(line):
                found["line"] = line
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return found.get("line")


def test_ctrl_c_while_compiling_is_acknowledged_at_once_and_a_second_one_stops_now(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "--run_dir",
            str(run_dir),
            "--config",
            *TINY,
            "training.iterations=1000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        seen: list[str] = []
        assert _read_until(
            proc.stdout,
            lambda line: "compiling the meta-test and the generation step" in line,
            seen,
            timeout=HANG_GUARD_S,
        ), seen
        proc.send_signal(signal.SIGINT)
        acknowledged = _read_until(
            proc.stdout, lambda line: line.startswith("Ctrl-C: stopping after this generation"), seen, timeout=60
        )
        assert acknowledged and "press Ctrl-C again to stop now" in acknowledged, seen
        # "at once" = while compiling, before the first generation ends (an order, not a wall-clock time)
        assert not any(line.startswith("first generation took") for line in seen), seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Ctrl-C again: stopping now" in out and "Traceback" not in err, err[-3000:]
    assert "Ctrl-C: stopping after this generation" in (run_dir / CONSOLE).read_text()
    assert not (run_dir / "checkpoint.npz").exists()  # stopped inside the first generation: nothing to keep


STOPPED = re.compile(
    r"^stopped by SIGINT after gen (\d+)/(\d+) \((\d+) generations? done; checkpoint saved\); resume with: (.+)$"
)


def test_ctrl_c_ends_with_one_stop_line_numbered_as_the_progress_lines(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "launch.py"), "--run_dir", str(run_dir), "--config", *TINY]
    command += ["training.iterations=1000", "logging.progress_seconds=0"]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        seen: list[str] = []
        assert _read_until(proc.stdout, lambda line: line.startswith("gen 3/"), seen, timeout=HANG_GUARD_S), seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = seen + out.splitlines()
    stop_lines = [line for line in lines if "stopped" in line]
    assert len(stop_lines) == 1 and stop_lines[0] == lines[-1], lines[-6:]
    match = STOPPED.match(stop_lines[0])
    assert match, stop_lines[0]
    last, total, done = int(match.group(1)), int(match.group(2)), int(match.group(3))
    with np.load(run_dir / "checkpoint.npz") as saved:
        assert done == int(saved["step"]) and last == done - 1 and total == 1000
    numbered = [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("gen ")]
    assert numbered[-1] == last  # the last progress or summary line shows the same generation
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == last
    assert match.group(4) == f"{environment.python_command()} launch.py --resume {run_dir}"
    assert (run_dir / CONSOLE).read_text().splitlines()[-1] == stop_lines[0]


def test_second_ctrl_c_stops_now_and_other_signals_only_once():
    announced, stopped = [], threading.Event()
    stop = StopRequest(announce=announced.append, stop_now=stopped.set).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert stopped.wait(30), announced
    finally:
        stop.uninstall()
    assert stop.signal_name == "SIGTERM"
    assert announced == [
        "SIGTERM: stopping after this generation (a checkpoint is written)",
        "Ctrl-C again: stopping now; the last checkpoint stays as it is",
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["launch.py", "--config_files", "configs/test.yaml"],
        ["-m", "vsml.data", "status"],
        ["-m", "vsml.plot", "runs/x"],
    ],
)
def test_missing_packages_are_one_line_naming_the_install_command(command):
    # -S: no site-packages, so nothing from requirements.txt is importable
    result = subprocess.run(
        [sys.executable, "-S", *command], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "numpy" in result.stderr and "install -r requirements.txt" in result.stderr


def test_prepare_without_tensorflow_says_what_to_install(tmp_path, monkeypatch, capsys):
    from vsml.data import __main__ as data_main

    monkeypatch.setattr(
        environment, "missing_modules", lambda modules: ["tensorflow-cpu"] if "tensorflow" in modules else []
    )
    assert data_main.main(["prepare", "mnist", "--data_dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "requirements-prepare.txt" in err and "mnist" in err


def test_hints_name_the_running_python(tmp_path, monkeypatch):
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/python3")
    assert environment.python_command(str(venv_python)) == ".venv/bin/python"
    assert environment.python_command("/usr/bin/python3.11") == "python3"  # what PATH finds there
    monkeypatch.setattr(shutil, "which", lambda name: str(venv_python.parent / "python3"))  # an activated venv
    assert environment.python_command(str(venv_python)) == "python3"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert environment.python_command("/opt/py/bin/python") == "/opt/py/bin/python"


def test_in_process_a_second_ctrl_c_interrupts_the_main_thread_instead_of_exiting():
    announced = []
    stop = StopRequest(announce=announced.append, in_process=True).install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(3000):  # Python code, so the main thread gets to the handler
                time.sleep(0.01)
    finally:
        stop.uninstall()
    assert stop.signal_name == "SIGINT" and announced[-1].startswith("Ctrl-C again: stopping now")
