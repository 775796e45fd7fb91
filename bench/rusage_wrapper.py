"""Run a command and append `RUSAGE {json}` with its CPU seconds and peak RSS to stdout.

A wrapper process per measured command, so each figure belongs to that command alone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def main() -> int:
    result = subprocess.run(sys.argv[1:])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stdout.flush()
    print(
        "RUSAGE "
        + json.dumps(
            {
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
                "maxrss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
            }
        )
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
