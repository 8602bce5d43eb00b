"""Service specs read as swarm reads them (`trust.proxy.swarm`): image IDs, mount types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trust.proxy import gojson
from trust.proxy.decide import Refused
from trust.proxy.swarm import check_service_mount, task_image_id
from trust.reference import parse

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (f"sha256:{HEX}", f"sha256:{HEX}"),
        ("sha256:0123ab", "sha256:0123ab"),
        # other spellings of docker.io/library/sha256 reach the worker in familiar form
        ("docker.io/library/sha256:0123ab", "sha256:0123ab"),
        ("index.docker.io/library/sha256:0123ab", "sha256:0123ab"),
        ("library/sha256:0123ab", "sha256:0123ab"),
        # not an ID for the engine: upper case, too long, a digest, another repository
        ("sha256:0123AB", None),
        (f"sha256:{HEX}0", None),
        (f"sha256:0123ab@sha256:{HEX}", None),
        ("sha256", None),
        ("example.com/sha256:0123ab", None),
        ("0123ab", None),  # the worker adds :latest, which is no ID prefix
    ],
)
def test_the_image_id_a_worker_runs(image: str, expected: str | None) -> None:
    assert task_image_id(parse(image)) == expected


def _mount(value: dict[str, object]) -> object:
    return gojson.loads(json.dumps(value).encode())


@pytest.mark.parametrize(
    "mount",
    [
        {"Source": "{socket}", "Target": "/s"},
        {"Type": "", "Source": "{socket}", "Target": "/s"},
        {"Type": "BIND", "Source": "{socket}", "Target": "/s"},
        {"Type": "b\u0131nd", "Source": "{socket}", "Target": "/s"},
        {"type": "bind", "source": "{dir}", "Target": "/s"},
        {"Type": "bind", "Source": "/{{/* */}}etc", "Target": "/s"},
        {
            "Type": "Volume",
            "VolumeOptions": {"DriverConfig": {"Options": {"device": "{dir}", "o": "bind"}}},
        },
        {
            "Type": "volume",
            "VolumeOptions": {"DriverConfig": {"Options": {"device": '{{"/etc"}}'}}},
        },
    ],
)
def test_service_mounts_that_reach_the_engine_socket(
    mount: dict[str, object], tmp_path: Path
) -> None:
    engine = tmp_path / "engine.sock"
    engine.touch()
    text = json.dumps(mount).replace("{socket}", str(engine)).replace("{dir}", str(tmp_path))
    with pytest.raises(Refused) as refused:
        check_service_mount(_mount(json.loads(text)), str(engine))
    assert refused.value.kind == "EngineSocket"


@pytest.mark.parametrize(
    "mount",
    [
        {"Type": "bind", "Source": "/etc", "Target": "/s"},
        {"Type": "tmpfs", "Source": "{socket}", "Target": "/s"},
        {"Type": "volume", "Source": "{{.Task.Slot}}", "Target": "/s"},
    ],
)
def test_service_mounts_that_do_not(mount: dict[str, object], tmp_path: Path) -> None:
    engine = tmp_path / "engine.sock"
    engine.touch()
    text = json.dumps(mount).replace("{socket}", str(engine))
    check_service_mount(_mount(json.loads(text)), str(engine))
