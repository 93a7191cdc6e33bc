"""Test helper: `smmu-harness ARGS` in this process (harness.cli.main), for checks that need no separate process:
returns (status, stdout, stderr) as text, the console output included (the machine writes to sys.stdout)."""
from __future__ import annotations


def cli(capsys, *args) -> tuple[int, str, str]:
    from harness.cli import main

    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err
