"""Run a training command so that it dies with the worker process that started it.

Started by tasks/launches/process.py as `python -I -S orphan_guard.py <worker pid> <argv…>`: on Linux it
asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG, which survives exec), checks the
parent is still the worker, then execs the command in its place. A worker that is SIGKILLed therefore
leaves no training process behind to finish (and report) a run the reaper has already marked failed.
Standard library only, no site packages: it adds a few milliseconds to the start.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent, argv = int(sys.argv[1]), sys.argv[2:]
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        sys.exit("labmate: the worker that started this run has stopped; not starting it")
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"labmate: could not start `{argv[0]}`: {exc.strerror}\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
