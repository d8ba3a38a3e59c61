"""checks.py - the pass/fail bookkeeping shared by the Python tests: check() prints one
PASS/FAIL line per check, summary() the closing `N passed, M failed` line and the exit code."""
import subprocess

_counts = {"passed": 0, "failed": 0}


def check(ok, label, detail=""):
    _counts["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}", flush=True)


def run(cmd, timeout=900):
    """Runs a command, capturing its output as text."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def summary():
    """Prints the closing line; returns the process exit code (1 on any failure)."""
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    return 1 if _counts["failed"] else 0
