import os
from pathlib import Path

import pytest
import torch

# two threads (CI's machines), or what OMP_NUM_THREADS asks (a run beside a training job: one)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, min(2, os.cpu_count() or 1)))
PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"


@pytest.fixture
def smoke():
    from lic.scales import get_scale

    return get_scale("smoke")


@pytest.fixture
def tmp_zoo(tmp_path, monkeypatch):
    """Zoo and run folders in a temporary directory."""
    monkeypatch.setenv("LIC_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("LIC_RUNS", str(tmp_path / "runs"))
    return tmp_path


def pytest_collection_modifyitems(config, items):
    """OpenVINO's tests last: after OpenVINO has run in a process, the SIGCONT of test_train's
    paused-job test crashed pytest with a segmentation fault (see lic/deploy.py)."""
    items.sort(key=lambda item: item.path.name == "test_deploy.py")
