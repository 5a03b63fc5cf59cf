"""Progress output: native code's stderr kept out of the terminal while a search runs."""

import subprocess
import sys
import textwrap


def test_native_writes_on_stderr_go_to_the_log_and_python_notes_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "native.log"
    # fd 2 written directly, as MetaSchedule's C++ warnings are; a real process, as pytest replaces sys.stderr
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from qcompile import progress
        with progress.native_stderr_to(Path({str(log)!r})):
            os.write(2, b"Warning: Tensorize failed\\n")
            progress.Reporter().note("searching")
        os.write(2, b"after\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stderr == "[qcompile] searching\nafter\n"
    assert log.read_text() == "Warning: Tensorize failed\n"
