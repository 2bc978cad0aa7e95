"""Run every benchmark module in its own process, one after the other."""

import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    failed = []
    for module in sorted(Path(__file__).parent.glob("bench_*.py")):
        print(f"\n=== {module.stem} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{module.stem}", *sys.argv[1:]]).returncode:
            failed.append(module.stem)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
