"""Saved plans (`plan --out FILE`, `apply FILE`): the options they were made with,
what they were made from, and the changes, so apply can refuse a stale one."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkspec.errors import SparkspecError, StalePlanError, StatePathError
from sparkspec.fsutil import atomic_write_text
from sparkspec.plan.model import Plan, PlanOptions
from sparkspec.plan.view import FORMAT_VERSION, plan_json
from sparkspec.config.loader import LoadOptions
from sparkspec.jsontext import load_json

if TYPE_CHECKING:
    from sparkspec.config.model import Project

KIND = "sparkspec-plan"


@dataclass(frozen=True)
class SavedPlan:
    spec: str
    load_options: LoadOptions
    plan_options: PlanOptions
    fingerprint: dict[str, str]
    changes: list[dict[str, Any]]


def plan_target(out: str) -> Path:
    """Where `plan --out` saves: a new or regular file (through a symlink, its target). A pipe,
    a device or a folder is refused before anything is planned: a rename would replace it."""
    if not out.strip():
        raise SparkspecError("--out needs the name of a file to save the plan to")
    path = Path(out)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise SparkspecError(f"--out {out}: {path} is not a regular file (a folder, a pipe or a device); "
                             "give the name of a file to save the plan to")
    if not path.parent.is_dir():
        raise SparkspecError(f"--out {out}: the folder {path.parent} does not exist; make it first, or save "
                             "the plan elsewhere")
    if path.is_file() and not _is_saved_plan(path):
        # `--out project.spark.yaml` (or the lock, a template, an image) would replace it with
        # the plan: a saved plan is overwritten, nothing else.
        raise SparkspecError(f"--out {out}: that file exists and is not a saved plan; sparkspec overwrites "
                             "only an earlier plan: choose another name")
    return path


def _is_saved_plan(path: Path) -> bool:
    try:
        raw = load_json(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("kind") == KIND


def _from_plan(path: Path, name: str) -> str:
    """A file the plan names (the spec, a var file), as a path from the plan file's folder: the
    plan applies from any folder, as long as it stays beside the project it was made for."""
    return os.path.relpath(Path(name).resolve(), path.resolve().parent)


def _to_here(path: Path, name: str) -> str:
    """A file named from the plan file's folder, as a path from here (shown in messages)."""
    full = os.path.normpath(path.resolve().parent / name)
    here = os.path.relpath(full)
    return full if here.startswith("..") else here


def save_plan(path: Path, spec: str, plan: Plan, load_options: LoadOptions) -> None:
    payload = {
        "kind": KIND,
        "spec": _from_plan(path, spec),
        "paths": "from-plan",  # spec and var_files: relative to the plan file's folder
        "options": {
            "variables": list(load_options.variables),
            "var_files": [_from_plan(path, f) for f in load_options.var_files],
            "provider": load_options.provider, "targets": list(plan.options.targets),
            "replace": list(plan.options.replace),
        },
        "fingerprint": dict(plan.fingerprint),
        **plan_json(plan),
    }
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_plan(path: Path) -> SavedPlan:
    try:
        raw = load_json(path.read_text(encoding="utf-8"))
        if raw.get("kind") != KIND:
            raise ValueError("not a sparkspec plan")
        version = str(raw.get("format_version"))
        if version.isdigit() and int(version) > int(FORMAT_VERSION):
            raise StatePathError(f"{path} was made by a newer sparkspec (plan format {version}; this one "
                                 f"reads {FORMAT_VERSION}); upgrade sparkspec, or make a new plan with this "
                                 "one (`sparkspec plan --out FILE`)")
        opts = raw["options"]
        # Plans saved before "paths" named their files from the folder `plan` ran in.
        here = (lambda name: _to_here(path, str(name))) if raw.get("paths") == "from-plan" else str
        return SavedPlan(
            spec=here(raw["spec"]),
            load_options=LoadOptions(tuple(opts["variables"]), tuple(here(f) for f in opts["var_files"]),
                                     opts["provider"]),
            plan_options=PlanOptions(tuple(opts["targets"]), tuple(opts["replace"])),
            fingerprint={str(k): str(v) for k, v in raw["fingerprint"].items()},
            changes=list(raw["changes"]))
    except FileNotFoundError:
        raise StatePathError(f"{path}: no such plan file; make one with `sparkspec plan --out {path}`") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StatePathError(f"{path}: not a readable sparkspec plan ({exc}); make a new one with "
                             "`sparkspec plan --out FILE`") from None


def check_fresh(saved: SavedPlan, fresh: Plan, path: Path) -> None:
    """Refuse a plan made from another spec, other variables, another lock or cache state."""
    labels = {"spec_sha256": "the spec", "vars_sha256": "the variables",
              "templates_sha256": "a template file", "lock_sha256": "the lock", "provider": "the provider"}
    for field, label in labels.items():
        if saved.fingerprint.get(field) != fresh.fingerprint.get(field):
            raise StalePlanError(f"{path}: the plan is stale: {label} changed since it was made; "
                                 "run `sparkspec plan --out FILE` again")
    changes = plan_json(fresh)["changes"]
    if saved.changes != changes:
        raise StalePlanError(f"{path}: the plan is stale: {_what_changed(saved.changes, changes)}; "
                             "run `sparkspec plan --out FILE` again")


def _what_changed(saved: list[Any], fresh: list[Any]) -> str:
    """The first change whose action moved, named: a `pull` that this run's remote (off, say)
    does not give is not the renders or the cache changing."""
    now = {(c.get("kind"), c.get("id")): c.get("action") for c in fresh if isinstance(c, dict)}
    for change in saved:
        if not isinstance(change, dict):
            continue
        address = (change.get("kind"), change.get("id"))
        was, then = change.get("action"), now.get(address, "nothing")
        if was != then:
            why = ("the team's remote answers otherwise in this run: another --remote / --remote-mode or "
                   "SPARKSPEC_REMOTE_MODE, out of reach, or changed" if {was, then} & {"pull", "wait"}
                   else "the journal of submitted tasks changed: an apply ran, or was killed, since"
                   if "collect" in (was, then) else "the renders or the cache changed")
            return f"{address[0]}.{address[1]} was {was!r} when it was made and is {then!r} now ({why})"
    keys = {(c.get("kind"), c.get("id")): c.get("key") for c in fresh if isinstance(c, dict)}
    for change in saved:
        if isinstance(change, dict) and change.get("key") != keys.get((change.get("kind"), change.get("id"))):
            return (f"{change.get('kind')}.{change.get('id')} would render another key now (an input it reads "
                    "changed since it was made: a first-frame image, or the render it starts from)")
    return "the renders or the cache changed since it was made"


_IN_EFFECT = ("--provider", "--var", "--var-file")  # options whose effect, not spelling, is compared


def _same_in_effect(saved: SavedPlan, given: LoadOptions) -> Callable[[str], bool]:
    """Whether what an option of `given` says is what the plan was made with, though spelt
    otherwise: `--provider spark` for a spark spec, `--var color=red` where the spec's vars say
    red. The variables the command line gives (its --var and --var-file alone) must come to the
    plan's. Each spelling of the options is loaded once, and only when asked."""
    from sparkspec.config.loader import load_project
    from sparkspec.errors import SpecError

    made = saved.load_options

    @functools.cache
    def project(options: LoadOptions) -> Project | None:
        try:
            return load_project(Path(saved.spec), options).project
        except (SpecError, OSError):
            return None

    def same(flag: str) -> bool:
        then = project(made)
        if then is None:
            return False
        if flag == "--provider":
            return given.provider == then.provider.type
        now = project(LoadOptions(given.variables, given.var_files, made.provider))
        return now is not None and now.vars_sha256 == then.vars_sha256

    return same


def check_options(saved: SavedPlan, path: Path, spec: str | None, load_options: LoadOptions,
                  plan_options: PlanOptions) -> None:
    """A saved plan is applied as it was made: an option given again must say what it said
    (terraform refuses variables with a saved plan). `spec` is None when -f was not given."""
    given: list[tuple[str, object, object]] = [
        ("--provider", load_options.provider, saved.load_options.provider),
        ("--var", load_options.variables, saved.load_options.variables),
        ("--var-file", load_options.var_files, saved.load_options.var_files),
        # the order of ids means nothing: `--target a --target b` is `--target b --target a`
        ("--target", tuple(sorted(plan_options.targets)), tuple(sorted(saved.plan_options.targets))),
        ("--replace", tuple(sorted(plan_options.replace)), tuple(sorted(saved.plan_options.replace))),
    ]
    if spec is not None and Path(spec).resolve() != Path(saved.spec).resolve():
        raise StalePlanError(f"{path}: the plan was made from {saved.spec}, not {spec}; apply it without -f, "
                             f"or make a new plan with `sparkspec plan -f {spec} --out FILE`")
    same = _same_in_effect(saved, load_options)
    for flag, value, made_with in given:
        if value and value != made_with and not (flag in _IN_EFFECT and same(flag)):
            shown = " ".join(f"{flag} {v}" for v in value) if isinstance(value, tuple) else f"{flag} {value}"
            raise StalePlanError(f"{path}: a saved plan is applied as it was made, and it was not made with "
                                 f"{shown}; apply it without {flag}, or make a new plan with those options "
                                 "(`sparkspec plan ... --out FILE`)")

