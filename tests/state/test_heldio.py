"""heldio's durable small writes: a failing write is the OSError it is (the journal's caller
turns ENOSPC into "collected, not journalled"), whichever way the bytes went."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A file size limit of 0: the O_DIRECT write fails with EFBIG, as a full disk fails
# it with ENOSPC. SIGXFSZ ignored, so the write returns the error instead of killing the process.
CHILD = """
import errno, resource, signal, sys
from pathlib import Path
from sparkspec.state import heldio
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
try:
    heldio.write_new(Path(sys.argv[1]), b'{"task_id": "cgt-1"}', pad=True)
except OSError as exc:
    print("OSError", errno.errorcode.get(exc.errno), Path(sys.argv[1]).exists())
except BaseException as exc:
    print("other", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("held", [True, False], ids=["libc-gil-held", "os"])
def test_a_failed_sector_write_raises_the_oserror_and_leaves_no_file(tmp_path: Path, held: bool) -> None:
    """It raised BufferError ("cannot close exported pointers exist"): the failed call's
    traceback held a view of the mmap it wrote from."""
    child = CHILD if held else CHILD.replace("from sparkspec.state import heldio",
                                             "from sparkspec.state import heldio\nheldio._libc = None")
    out = subprocess.run([sys.executable, "-c", child, str(tmp_path / "entry.json")], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split() == ["OSError", "EFBIG", "False"], out.stdout + out.stderr
