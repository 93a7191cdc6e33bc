"""`python3 -m harness ...` is `smmu-harness ...`.

`run` ends its process without the interpreter's teardown: once `main` has returned, the atexit handlers run
and the standard streams are flushed, then `os._exit` with the status. Freeing every module, the machine's
reference cycles and the Unicorn instances one by one is ~10 ms of a 0.1 s run (start-up, tools/bench.py
qemu), and the OS reclaims all of it at once; every file a run writes (console, -D log, traces, semihosting
files) is closed before `main` returns. The interpreter's own exit is kept when a non-daemon thread still
runs (it would be joined; a daemon thread, such as harness/interrupt.py's SIGINT watcher, dies either way),
under `python3 -i`, or when a stream cannot be flushed (it reports that as it always does).

`run` also starts with the cyclic garbage collector off: the imports and the board's construction leave no
garbage cycles, and collecting during them cost ~3 ms; just before the guest runs `harness.cli.cmd_run`
freezes what they made (`gc.freeze`: it lives as long as the run, so no collection walks it) and turns the
collector back on (`gc_for_the_guest`). Other commands run with it on from their start."""
import gc
import os
import sys

gc.disable()          # start-up of `run` without cyclic collections: back on before the guest runs (harness.cli)
from . import cli     # noqa: E402
from .cli import command_of, main  # noqa: E402

if command_of(sys.argv[1:]) == "run":
    cli.GC_OFF_FOR_START_UP = True
else:
    gc.enable()


def _exit(code: int) -> None:
    import atexit

    threading = sys.modules.get("threading")
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    joined = threading is not None and any(not t.daemon for t in threading.enumerate()
                                           if t is not threading.main_thread())   # daemons die either way
    if joined or run_exitfuncs is None or sys.flags.inspect:
        sys.exit(code)
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code & 0xFF)


code = main()
if command_of(sys.argv[1:]) == "run":
    _exit(code)
sys.exit(code)
