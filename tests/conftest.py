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


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 (moto's server mode, tests/s3server.py) with a bucket "jade",
    and the standard variables set for this process and its children; yields "s3://jade". The local cache of
    remote run directories (JADE_CACHE) is the session's own."""
    from tests.s3server import serve

    saved = os.environ.get("JADE_CACHE")
    os.environ["JADE_CACHE"] = str(tmp_path_factory.mktemp("jade-cache"))
    try:
        with serve("jade"):
            yield "s3://jade"
    finally:
        if saved is None:
            os.environ.pop("JADE_CACHE", None)
        else:
            os.environ["JADE_CACHE"] = saved
