"""An items file is read the way the seeder reads it, so the work Job's completions
equal the items the seeder publishes, and a file the ConfigMap cannot hold is
refused naming workqueue:itemsFile."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from components import settings
from components.seed_job import ITEMS_FILE
from components.settings import SettingsError
from tests.pulumi_harness import run_program, run_program_expecting_error
from workqueue.seeder import read_items

JOB = "kubernetes:batch/v1:Job"

#: Files whose lines Python's str.splitlines cuts where the seeder does not, or
#: whose blank lines differ between str.strip and bytes.strip.
SEEDER_LINES = {
    "form feed and line separator": "a\x0cb\nc\u2028d\n".encode(),
    "every other line break": "1\x0b2\x1c3\x1d4\x1e5\x856\u20297\n".encode(),
    "CRLF and blank lines": b"apple\r\n\r\n  \t\r\nbanana\r\ncherry",
    "a line of non-ASCII space": "first\n\u3000\nlast\n".encode(),
}


@pytest.fixture
def items_file(tmp_path, monkeypatch):
    """Writes an items file into a repository root of the test's own."""
    root = tmp_path.resolve()
    monkeypatch.setattr(settings, "PROJECT_ROOT", root)

    def write(content: bytes) -> str:
        (root / "items.txt").write_bytes(content)
        return "items.txt"

    return write


def _work_job(run):
    return next(r for r in run.of_type(JOB) if r.name == "work-work")


@pytest.mark.parametrize("case", sorted(SEEDER_LINES))
def test_completions_equal_the_items_the_seeder_reads(case, items_file):
    content = SEEDER_LINES[case]
    seeded = read_items(io.BytesIO(content), 65536, "items.txt")

    run = run_program("dev", {"items": None, "itemsFile": items_file(content)})

    seed_file = run.one("kubernetes:core/v1:ConfigMap", "seed-items").inputs["data"]
    published = read_items(io.BytesIO(seed_file[ITEMS_FILE].encode()), 65536, "cm")
    assert published == seeded, f"{case}: the ConfigMap gives {published}"
    completions = _work_job(run).inputs["spec"]["completions"]
    assert completions == len(seeded), f"{case}: {completions} for {len(seeded)}"


def test_a_file_that_is_not_utf8_is_refused_naming_the_key_and_line(items_file):
    name = items_file(b"apple\nbanana\n\xffcherry\n")

    error, registered = run_program_expecting_error(
        "dev", {"items": None, "itemsFile": name}
    )

    assert isinstance(error, SettingsError), repr(error)
    assert "workqueue:itemsFile" in str(error) and "UTF-8" in str(error), str(error)
    assert "line 3" in str(error), str(error)
    assert registered == []


def test_a_file_of_blank_lines_is_refused_naming_the_key(items_file):
    name = items_file(b"\n \r\n\t\n")

    error, _ = run_program_expecting_error("dev", {"items": None, "itemsFile": name})

    assert isinstance(error, SettingsError), repr(error)
    assert "workqueue:itemsFile" in str(error), str(error)


def test_an_item_over_the_limit_is_refused_with_its_line(items_file):
    name = items_file(b"short\n" + b"x" * 65537 + b"\n")

    error, _ = run_program_expecting_error("dev", {"items": None, "itemsFile": name})

    assert "workqueue:itemsFile" in str(error) and "line 2" in str(error), str(error)


def test_the_committed_items_file_is_read_as_the_seeder_reads_it():
    path = Path(settings.PROJECT_ROOT) / "items/prod.txt"
    seeded = read_items(io.BytesIO(path.read_bytes()), 65536, "prod.txt")

    run = run_program("prod")

    seed_file = run.one("kubernetes:core/v1:ConfigMap", "seed-items").inputs["data"]
    assert seed_file[ITEMS_FILE].encode().split(b"\n")[:-1] == seeded


def test_an_item_ending_in_a_carriage_return_is_refused_naming_the_line(items_file):
    name = items_file(b"apple\r\nbanana\r\r\n")

    error, registered = run_program_expecting_error(
        "dev", {"items": None, "itemsFile": name}
    )

    assert isinstance(error, SettingsError), repr(error)
    assert "workqueue:itemsFile" in str(error) and "line 2" in str(error), str(error)
    assert registered == []
