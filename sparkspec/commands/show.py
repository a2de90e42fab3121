"""`sparkspec show`: the lock as a table."""

from __future__ import annotations

from pathlib import Path

from sparkspec.state.lockfile import lock_path, read_lock


def show_lock(spec: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    path = lock_path(spec)
    lock, text = read_lock(path)
    if not text and not spec.exists():  # no project here (a subfolder of one, say): not "nothing rendered"
        from sparkspec.config.loader import missing_spec
        from sparkspec.errors import SparkspecError

        raise SparkspecError(missing_spec(spec, str(spec)))
    import sys

    class Quiet(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 without a word: say it (cli.main)
            raise BrokenPipeError

    # On a terminal the table fits the window; piped, it is never folded mid-path.
    console = Quiet(highlight=False, width=None if sys.stdout.isatty() else 200)
    if not text:
        console.print(f"No lock at {path}: nothing rendered yet; run `sparkspec apply`.")
        return
    table = Table(title=str(path), title_justify="left")
    with_takes = any(len(record.take_records()) > 1 for record in lock.scenes.values())
    columns = ("scene", "take") if with_takes else ("scene",)
    for column in (*columns, "provider", "model", "seed", "tokens", "video", "key", "task"):
        table.add_column(column, justify="right" if column in ("seed", "tokens") else "left",
                         no_wrap=column in ("scene", "video"))
    total = renders = 0
    for sid, scene in sorted(lock.scenes.items()):
        takes = scene.take_records()
        # The picked take first, under the scene's id; its other takes below it (every one was paid for).
        for row, number in enumerate(sorted(takes, key=lambda n: (n != scene.pick, n))):
            record = takes[number]
            total += record.tokens
            renders += 1
            seed = f"{record.seed}{' (derived)' if record.seed_derived else ''}"
            picked = " (picked)" if len(takes) > 1 and number == scene.pick else ""
            table.add_row(*("" if row else sid, f"{number}{picked}")[:len(columns)],
                          record.provider, record.model, seed, f"{record.tokens:,}", record.video.path,
                          record.key[:12], record.task_id)
    console.print(table)
    for name, seq in sorted(lock.sequences.items()):
        console.print(f"sequence {name}: {seq.video.path} ({len(seq.members)} clips)")
    counted = f" ({renders} takes)" if renders != len(lock.scenes) else ""
    console.print(f"{len(lock.scenes)} scene(s){counted}, {total:,} tokens in all.")
