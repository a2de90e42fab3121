"""The fake gateway's `unique` template mode (what benchmarks/apply_scale.py measures with):
every task's video and last frame are its own bytes, sound as a video and a PNG, as real
renders are; only the pictures are the template's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from PIL import Image

from fakeapi import FakeSparkAPI
from sparkspec.media.probe import check_png, probe_video


def test_each_task_of_a_shape_gets_files_of_its_own(tmp_path: Path) -> None:
    params = {"resolution": "480p", "ratio": "16:9", "frames": 29}
    with FakeSparkAPI(api_key="k", render="template", unique=True) as api, \
            httpx.Client(headers={"Authorization": "Bearer k"}, timeout=30) as client:
        digests = set()
        for n in range(2):
            task = api.create(dict(params, content=[{"type": "text", "text": f"shot {n}"}]), "m")
            task.render.result()
            urls = api.result(task)
            for kind, url in (("mp4", urls["video_url"]), ("png", urls["last_frame_url"])):
                response = client.get(url)
                assert response.status_code == 200
                assert int(response.headers["content-length"]) == len(response.content)
                path = tmp_path / f"{n}.{kind}"
                path.write_bytes(response.content)
                digests.add(hashlib.sha256(response.content).hexdigest())
            assert probe_video(tmp_path / f"{n}.mp4").frames == 29
            check_png(tmp_path / f"{n}.png")
            with Image.open(tmp_path / f"{n}.png") as image:
                assert image.text["task"] == task.id  # type: ignore[attr-defined]
        assert len(digests) == 4
