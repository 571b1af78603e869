import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# the suite's `datasets` caches stay out of the user's cache (and the user's out of the suite's)
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="jade-tests-datasets-"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory):
    """One factory run with fake backends (tests/fakerun.py), shared read-only: copy it to change it."""
    from tests.fakerun import make_fake_run

    return make_fake_run(tmp_path_factory.mktemp("fake") / "run")
