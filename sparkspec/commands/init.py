"""`sparkspec init`: a starter project that validates and renders offline."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from sparkspec.errors import SparkspecError
from sparkspec.fsutil import atomic_write_text

STARTER = """\
# A sparkspec project: `sparkspec plan` shows what would render, `sparkspec apply` renders it.
# Schema: `sparkspec schema`. The local provider renders offline; switch `type` to `spark`
# and set SPARK_API_KEY to render through the Spark Dance API.
version: 1
name: {name}
provider:
  type: local
  parallelism: 2
vars:
  subject: a paper boat
defaults:
  resolution: 480p
  ratio: "16:9"
  seed: 42
scenes:
  opening:
    prompt: "{{{{ subject }}}} drifting on a rain puddle, soft morning light"
    duration: 2
  follow:
    first_frame: {{scene: opening}}
    prompt: "The camera follows {{{{ subject }}}} as it sails into a gutter stream"
    duration: 2
sequences:
  film: {{scenes: [opening, follow]}}
"""

GITIGNORE = ".sparkspec/\nrenders/\n"


def write_starter(spec: Path, given: str = "project.spark.yaml") -> list[str]:
    """Write the starter spec at `spec` (`given`: as the user named it, for the next commands)."""
    if spec.exists():
        raise SparkspecError(f"{spec} already exists; edit it, or pass -f NEW.yaml for another spec")
    name = spec.resolve().parent.name or "project"
    # JSON quoting is YAML quoting: a folder named `a: b` or `#x` still makes a valid spec.
    atomic_write_text(spec, STARTER.format(name=json.dumps(name)))
    written = [f"Wrote {spec}"]
    ignore = spec.parent / ".gitignore"
    if not ignore.exists():
        atomic_write_text(ignore, GITIGNORE)
        written.append(f"Wrote {ignore}")
    else:  # the user's own: the state folder (cache, journal) is added, never committed; renders/ is their call
        text = ignore.read_text(encoding="utf-8", errors="replace")
        if not any(line.strip().strip("/") == ".sparkspec" for line in text.splitlines()):
            atomic_write_text(ignore, text + ("" if text.endswith("\n") or not text else "\n") + ".sparkspec/\n")
            written.append(f"Added .sparkspec/ to {ignore} (sparkspec's cache and journal; whether renders/ "
                           "goes into git is yours to choose)")
    option = "" if given == "project.spark.yaml" else f" -f {shlex.quote(given)}"
    written.append(f"Next: `sparkspec plan{option}`, then `sparkspec apply{option}`.")
    return written
