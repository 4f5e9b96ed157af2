"""The switch of serving's workers to a new version, on the folder they share: the
new version is committed only once every worker holds it, so a client whose
requests land on one worker and then another never gets the new version and then
the old; a worker that cannot load it leaves every worker on the old one; a worker
that starts later serves the committed version."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.errors import ServiceError
from serving.switch import PREFIX, ModelSwitch, shared_folder
from stack.rollback_order import DowngradeRefused, RollbackOrder, check_downgrade

KEY = b"test gate key"


@dataclass(frozen=True)
class Model:
    version: str


class Registry:
    """The alias and the versions behind it; loading takes `load_s` (per worker)."""

    def __init__(self, version: str, load_s: float = 0.0) -> None:
        self.version, self.load_s = version, load_s
        self.broken: set[str] = set()
        self.orders: dict[str, str] = {}  # version -> its rollback order tag

    def current_version(self) -> str:
        return self.version

    def check_switch(self, version: str, before: str) -> None:
        check_downgrade(
            self.orders.get(version), KEY, model="m", version=version, running=before
        )

    def roll_back(self, to: str, replaces: str) -> None:
        """What `edgeloop rollback --to` writes on the version (signed)."""
        order = RollbackOrder("m", to, replaces, "ops", "test", "2026-12-06T19:00")
        self.orders[to] = order.tag_value(KEY)

    def load(self, version: str) -> Model:
        time.sleep(self.load_s)
        if version in self.broken:
            raise OSError(f"cannot read version {version}")
        return Model(version)


def workers(folder: Path, *registries: Registry) -> list[ModelSwitch]:
    switches = [
        ModelSwitch(r, folder, len(registries), i + 1, timeout_s=3)
        for i, r in enumerate(registries)
    ]
    for switch in switches:
        threading.Thread(target=switch.follow, args=(0.01, 3600), daemon=True).start()
    return switches


def test_every_worker_switches_at_one_moment(tmp_path: Path):
    fast, slow = Registry("1"), Registry("1", load_s=0.3)
    one, two = workers(tmp_path, fast, slow)
    assert one.current().version == two.current().version == "1"
    fast.version = slow.version = "2"
    seen: list[str] = []
    done = threading.Event()

    def client() -> None:  # alternate between the workers, as connections do
        while not done.is_set():
            seen.extend([one.current().version, two.current().version])
            time.sleep(0.001)

    reader = threading.Thread(target=client)
    reader.start()
    assert one.switch() == ("1", "2")  # returns once both answer with v2
    assert two.current().version == "2"
    time.sleep(0.1)  # the client goes on a little after the switch
    done.set()
    reader.join()
    first_new = seen.index("2")
    assert set(seen[:first_new]) == {"1"} and set(seen[first_new:]) == {"2"}
    # worker two loaded v2 (0.3 s) before it was committed: v1 answered meanwhile
    assert first_new > 10
    assert one.switch() == ("2", "2")  # nothing to do


def test_a_worker_that_cannot_load_leaves_all_on_the_old_version(tmp_path: Path):
    good, bad = Registry("1"), Registry("1")
    one, two = workers(tmp_path, good, bad)
    bad.broken.add("2")
    good.version = bad.version = "2"
    with pytest.raises(ServiceError, match=r"workers \[2\] did not load version 2"):
        one.switch()
    assert one.current().version == two.current().version == "1"
    bad.broken.clear()  # the next try works
    assert one.switch() == ("1", "2")
    assert two.current().version == "2"


def test_a_worker_that_starts_later_serves_the_committed_version(tmp_path: Path):
    [one] = workers(tmp_path, Registry("1"))
    # The alias moved, and no switch was made: a restarted worker serves what the
    # others serve (v1), not the alias' new version.
    late = ModelSwitch(Registry("3"), tmp_path, 1, 1)
    assert late.current().version == one.current().version == "1"
    assert set(late.models) == {"1"}


def test_the_folders_of_serves_that_exited_are_removed(tmp_path: Path):
    exited = subprocess.Popen(["true"])
    exited.wait()
    gone = tmp_path / f"{PREFIX}{exited.pid}"
    living = tmp_path / f"{PREFIX}{os.getpid()}"
    for folder in (gone, living):
        folder.mkdir()
        (folder / "current").write_text("1")
    mine = shared_folder(tmp_path)
    assert mine == tmp_path / f"{PREFIX}{os.getppid()}" and mine.is_dir()
    assert not gone.exists() and (living / "current").read_text() == "1"


def test_quick_alias_changes_converge_on_the_current_champion(tmp_path: Path):
    """v1 -> v3 -> v1 within a second: worker two still held v1 when v1 was wanted
    again, wrote no ready file for it, and every switch waited out its timeout
    (300 s in serving; 'workers [2] did not load version 1')."""
    one_source, two_source = Registry("1"), Registry("1")
    for source in (one_source, two_source):
        source.roll_back("1", replaces="3")  # v3 -> v1 is a rollback, said out loud
    one, two = workers(tmp_path, one_source, two_source)
    for version in ("3", "1", "3", "1"):
        one_source.version = two_source.version = version
        start = time.monotonic()
        assert one.switch()[1] == version
        assert time.monotonic() - start < 1.0, version
        assert one.current().version == two.current().version == version


def test_a_version_that_does_not_verify_is_refused_and_not_retried_by_the_poll(
    tmp_path: Path,
):
    from stack.gate_seal import SealError

    class Unsealed(Registry):
        def load(self, version: str) -> Model:
            if version == "3":
                raise SealError(f"m v{version} has no gate seal")
            return super().load(version)

    one_source, two_source = Unsealed("1"), Unsealed("1")
    one, two = workers(tmp_path, one_source, two_source)
    one_source.version = two_source.version = "3"
    with pytest.raises(SealError, match="has no gate seal"):
        one.switch()
    assert one.current().version == two.current().version == "1"
    assert "no gate seal" in one.refused["3"]
    assert one._read("wanted") in {None, "1"}  # no other worker was asked
    assert one.switch(wait=False) == ("1", "1")  # the poll: not again
    one_source.version = two_source.version = "1"


def test_an_older_version_replaces_the_running_one_only_as_a_rollback(
    tmp_path: Path,
):
    """Setting champion to an older version switched serving to it like any
    promotion; without a rollback order it is refused, and says how."""
    one_source, two_source = Registry("3"), Registry("3")
    one, two = workers(tmp_path, one_source, two_source)
    one_source.version = two_source.version = "1"
    with pytest.raises(DowngradeRefused, match="edgeloop rollback --to 1"):
        one.switch()
    assert one.current().version == two.current().version == "3"
    assert one.switch(wait=False) == ("3", "3")  # the poll does not retry it
    for source in (one_source, two_source):
        source.roll_back("1", replaces="3")
    assert one.switch() == ("3", "1")
    assert one.current().version == two.current().version == "1"


def test_a_refresh_waits_for_another_switch_no_longer_than_the_timeout(
    tmp_path: Path,
):
    [one] = workers(tmp_path, Registry("1"))
    other = ModelSwitch(Registry("1"), tmp_path, 1, 1, timeout_s=0.3)
    with one._locked(None):  # another worker switching, for longer than 0.3 s
        start = time.monotonic()
        with pytest.raises(ServiceError, match="kept switching for 0.3 s"):
            other.switch()
        assert time.monotonic() - start < 2
