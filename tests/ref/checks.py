"""checks.py - the pass/fail bookkeeping shared by the Python tests: check() prints one
PASS/FAIL line per check, summary() the closing `N passed, M failed` line and the exit code."""
import subprocess

_counts = {"passed": 0, "failed": 0}


def check(ok, label, detail=""):
    _counts["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}", flush=True)
    return ok


def run(cmd, timeout=900, **kw):
    """Runs a command, capturing its output as text (undecodable bytes replaced); a command that
    runs past timeout comes back with returncode None and the reason as its stderr."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, None, "", f"timed out after {timeout}s")


def summary():
    """Prints the closing line; returns the process exit code (1 on any failure)."""
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    return 1 if _counts["failed"] else 0
