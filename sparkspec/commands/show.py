"""`sparkspec show`: the lock as a table."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sparkspec.state.lockfile import lock_path, read_lock


def show_lock(spec: Path, environ: Mapping[str, str] = os.environ) -> None:
    from rich.console import Console
    from rich.table import Table

    if spec.is_dir() or not lock_path(spec).exists():  # no project here: not "nothing rendered"
        from sparkspec.config.loader import require_spec

        require_spec(spec, str(spec))
    path = lock_path(spec)
    lock, text = read_lock(path)
    import sys

    class Quiet(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 without a word: say it (cli.main)
            raise BrokenPipeError

    if not text:
        import click

        click.echo(f"No lock at {path}: nothing rendered yet; run `sparkspec apply`.")
        return
    with_takes = any(len(record.take_records()) > 1 for record in lock.scenes.values())
    columns = ("scene", "take") if with_takes else ("scene",)
    names = (*columns, "provider", "model", "seed", "tokens", "video", "key", "task")
    rows: list[tuple[str, ...]] = []
    total = 0
    paid: set[tuple[str, str]] = set()  # (key, task): scenes sharing one render paid for it once
    for sid, scene in sorted(lock.scenes.items()):
        takes = scene.take_records()
        # The picked take first, under the scene's id; its other takes below it (every one was paid for).
        for row, number in enumerate(sorted(takes, key=lambda n: (n != scene.pick, n))):
            record = takes[number]
            if (record.key, record.task_id) not in paid:
                paid.add((record.key, record.task_id))
                total += record.tokens
            seed = f"{record.seed}{' (derived)' if record.seed_derived else ''}"
            picked = " (picked)" if len(takes) > 1 and number == scene.pick else ""
            rows.append((*("" if row else sid, f"{number}{picked}")[:len(columns)],
                         record.provider, record.model, seed, f"{record.tokens:,}", record.video.path,
                         record.key[:12], record.task_id))
    table = Table()  # the title is a line of its own: rich pads a table's title to the table's width
    for column in names:
        table.add_column(column, justify="right" if column in ("seed", "tokens") else "left", no_wrap=True)
    for cells in rows:
        table.add_row(*cells)
    # Piped, the table is as wide as it needs. NO_COLOR (no-color.org) turns off every style,
    # not only colours: no escape codes at all.
    width = Console(width=1 << 16).measure(table).maximum
    console = Quiet(highlight=False, width=None if sys.stdout.isatty() else max(width, 80),
                    color_system=None if environ.get("NO_COLOR") else "auto")
    if width <= console.width:
        console.print(str(path), markup=False)
        console.print(table)
    else:
        # Too wide for the window: a squeezed table cuts a token count to "19,8…" (read as another
        # value) and a task id, which support asks for, to a few letters. A field a line instead.
        console.print(str(path), markup=False)
        for cells in rows:
            take = f"take {cells[1]}" if with_takes else ""
            console.print(f"{cells[0]} {take}".rstrip() if cells[0] else f"  {take}", markup=False)
            for name, cell in zip(names[len(columns):], cells[len(columns):]):
                console.print(f"    {name:<8} {cell}", markup=False)
    for name, seq in sorted(lock.sequences.items()):
        console.print(f"sequence {name}: {seq.video.path} ({len(seq.members)} clip{'' if len(seq.members) == 1 else 's'})")
    counted = f" ({len(rows)} takes)" if len(rows) != len(lock.scenes) else ""
    console.print(f"{len(lock.scenes)} scene(s){counted}, {total:,} tokens in all.")
