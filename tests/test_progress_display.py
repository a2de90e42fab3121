"""The live display's overall count: every planned scene change advances it once."""

from __future__ import annotations

from sparkspec.apply.progress import LiveReporter


def test_the_overall_line_counts_done_of_total_deletes_included() -> None:
    reporter = LiveReporter(3)
    try:
        assert reporter.counts() == "0/3 done, 0 tokens"
        reporter({"event": "submitted", "scene": "a", "task_id": "t"})
        reporter({"event": "progress", "scene": "a", "task_id": "t", "progress": 0.5})
        reporter({"event": "completed", "scene": "a", "tokens": 1200})
        reporter({"event": "deleted", "scene": "old"})
        reporter({"event": "skipped", "sequence": "film", "reason": "member a did not render"})  # not a scene
        reporter({"event": "restored", "scene": "b"})
        assert reporter.counts() == "3/3 done, 1,200 tokens"
    finally:
        reporter.close()
