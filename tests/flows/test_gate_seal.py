"""The gates' seal covers each device profile's own file (where its measured best is
another variant than the version's file), and seals made before profiles had their
own files still verify."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from flows.adapters.registry import profile_files
from stack.gate_seal import GateSeal, SealError, check_file, verified_seal
from stack.rollback_order import DowngradeRefused, RollbackOrder, check_downgrade

KEY = b"test gate key"


def _seal(**per_profile: dict[str, str]) -> GateSeal:
    return GateSeal(
        model="m",
        version="3",
        ship_file="variants/int8_static.onnx",
        sha256="ab" * 32,
        variant="int8_static",
        profiles="gateway",
        gate="passed",
        per_profile=per_profile,
    )


def test_a_seal_from_before_per_profile_files_still_verifies():
    fields = {
        "model": "m",
        "version": "3",
        "ship_file": "variants/int8_static.onnx",
        "sha256": "ab" * 32,
        "variant": "int8_static",
        "profiles": "gateway",
        "gate": "passed",
    }
    message = json.dumps(fields, sort_keys=True).encode()
    mac = hmac.new(KEY, message, hashlib.sha256).hexdigest()
    tag = json.dumps(fields | {"mac": mac}, sort_keys=True)
    seal = verified_seal(tag, KEY, model="m", version="3")
    assert seal == _seal()
    assert seal.tag_value(KEY) == tag  # and one without them is written the same


def test_a_profile_file_is_sealed_by_its_hash(tmp_path: Path):
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(b"the fp32 file the gates measured")
    own = {
        "file": "variants/fp32.onnx",
        "sha256": hashlib.sha256(fp32.read_bytes()).hexdigest(),
        "variant": "fp32",
    }
    tag = _seal(cloud=own).tag_value(KEY)
    seal = verified_seal(tag, KEY, model="m", version="3")
    assert seal.per_profile == {"cloud": own}
    check_file(seal, fp32, "cloud")

    # Another file for cloud written into the tag: the MAC no longer matches.
    forged = json.loads(tag)
    forged["per_profile"]["cloud"]["sha256"] = "cd" * 32
    with pytest.raises(SealError, match="not made by this stack's gates"):
        verified_seal(json.dumps(forged), KEY, model="m", version="3")
    # The file replaced in the run after the gates measured it.
    fp32.write_bytes(b"another file")
    with pytest.raises(SealError, match=r"variants/fp32.onnx has SHA-256 .* changed"):
        check_file(seal, fp32, "cloud")


def test_each_profiles_file_is_read_from_the_versions_tags():
    tags = {
        "edgeloop.ship_per_profile": "mcu=-,gateway=int8_static,cloud=fp32",
        "edgeloop.ship_files_per_profile": (
            "gateway=variants/int8_static.onnx,cloud=variants/fp32.onnx"
        ),
    }
    assert profile_files(tags) == {
        "gateway": ("int8_static", "variants/int8_static.onnx"),
        "cloud": ("fp32", "variants/fp32.onnx"),
    }
    # Versions optimized before the tags existed, or with nothing that fits.
    assert profile_files({}) == {}
    assert profile_files({"edgeloop.ship_per_profile": "mcu=-"}) == {}


def _order(**changes: str) -> RollbackOrder:
    fields = {
        "model": "m",
        "version": "2",
        "replaces": "5",
        "who": "ops",
        "why": "v5 misreads the north cohort",
        "at": "2026-12-06T19:00:00+00:00",
    }
    return RollbackOrder(**(fields | changes))


def test_a_downgrade_needs_a_rollback_order_signed_for_it():
    """Setting champion to an older sealed version rolled the fleet and serving
    back to it, recorded like any promotion; now it needs a signed order."""
    check = functools.partial(check_downgrade, key=KEY, model="m", version="2")
    assert check(None, running="1") is None  # newer: not a downgrade
    assert check(None, running=None) is None  # nothing runs yet
    assert check(None, running="2-hotfix") is None  # not a registry version
    with pytest.raises(DowngradeRefused, match=r"edgeloop rollback --to 2"):
        check(None, running="5")
    order = _order()
    assert check(order.tag_value(KEY), running="5") == order
    assert check(order.tag_value(KEY), running="3") == order  # older than replaced
    refused = {
        "forged": order.tag_value(b"an EDIT user's guess"),
        "malformed": "{not json",
        "copied": _order(version="3").tag_value(KEY),
    }
    for case, value in refused.items():
        with pytest.raises(DowngradeRefused, match="rollback order"):
            check(value, running="5")
            pytest.fail(f"{case} order accepted")
    # A newer champion since the order needs a new one.
    with pytest.raises(DowngradeRefused, match="v6 came after it"):
        check(order.tag_value(KEY), running="6")
