"""How models are stored: parts under the per-file limit, every part checked, nothing stale."""
import subprocess
from pathlib import Path

import pytest
import torch

from lic import store
from lic.models.rnn import RNNCodec

PROJECT = Path(__file__).resolve().parents[1]


def _codec():
    torch.manual_seed(0)
    return RNNCodec(width=1 / 16, iterations=2).eval()


def _rebuild(codec, width, iterations):
    return RNNCodec(width, iterations)


def test_a_model_over_the_limit_is_stored_in_parts_and_loads_back_whole(tmp_path):
    model = _codec()
    spec = {"codec": "rnn", "width": 1 / 16, "iterations": 2}
    limit = 80_000  # bytes of fp16 weights per file (its largest tensor: 74 kB): parts for its 281 kB
    sha = store.save_model(model, tmp_path / "m.pt", spec, {}, max_bytes=limit)
    files = store.model_files(tmp_path / "m.pt")
    assert len(files) >= 3 and [f.name for f in files[1:3]] == ["m.part1.pt", "m.part2.pt"]
    assert all(f.stat().st_size < limit + 8_000 for f in files)  # tensor data + pickle overhead
    loaded = store.load_model(tmp_path / "m.pt", _rebuild, sha)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.half().float(), b), k

    store.save_model(model, tmp_path / "m.pt", spec, {})  # stored again, in one file
    assert store.model_files(tmp_path / "m.pt") == [tmp_path / "m.pt"]  # no stale part left behind


def test_a_damaged_part_is_named(tmp_path):
    spec = {"codec": "rnn", "width": 1 / 16, "iterations": 2}
    sha = store.save_model(_codec(), tmp_path / "m.pt", spec, {}, max_bytes=80_000)
    part = tmp_path / "m.part2.pt"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(store.StoredModelError, match=r"m\.part2\.pt is corrupt"):
        store.load_model(tmp_path / "m.pt", _rebuild, sha)


def test_no_committed_file_exceeds_8_mib():
    """The repository takes no file over 8 MiB; model files are split below it (MAX_FILE_BYTES)."""
    if not (PROJECT / ".git").exists():
        pytest.skip("not a git checkout")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    big = [(n, (PROJECT / n).stat().st_size) for n in names.decode().split("\0")
           if n and (PROJECT / n).is_file() and (PROJECT / n).stat().st_size > 8 * 2**20]
    assert not big, f"files over 8 MiB: {big}; store models with lic.store.save_model (it splits them)"



def test_the_context_models_mask_is_not_stored_and_comes_back_with_the_module(tmp_path):
    from lic import zoo

    torch.manual_seed(0)
    model = zoo.build("mbt2018", N=16, M=24).eval()
    state = store.stored_state(model)
    assert "context_prediction.mask" in model.state_dict() and not any(k.endswith(".mask") for k in state)
    torch.manual_seed(1)
    again = store.fill(zoo.build("mbt2018", N=16, M=24), state, tmp_path / "m.pt")
    assert torch.equal(again.context_prediction.mask, model.context_prediction.mask)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        half = {k: v.half().float() if k in state and v.is_floating_point() and state[k].dtype == torch.float16 else v
                for k, v in model.state_dict().items()}
        model.load_state_dict(half)
        assert torch.equal(model(x)["x_hat"], again(x)["x_hat"])
    with pytest.raises(store.StoredModelError, match="missing"):  # a stored weight may still not be missing
        store.fill(zoo.build("mbt2018", N=16, M=24), {k: v for k, v in state.items() if k != "g_s.0.weight"}, tmp_path / "m.pt")


def test_committed_names_the_commit_that_gives_a_file_back_and_refuses_one_git_does_not_keep(tmp_path):
    if subprocess.run(["git", "-C", str(store.PROJECT), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git clone")
    rel = "data/papers/claims.csv"
    where = store.committed(store.PROJECT / rel)
    kept = subprocess.run(["git", "-C", str(store.PROJECT), "show", f"{where['commit']}:{where['path']}"],
                          capture_output=True).stdout
    assert where["path"] == rel and kept == (store.PROJECT / rel).read_bytes()
    assert store.committed(tmp_path / "x.pt") is None  # outside the repository: a test's folder
    loose = store.PROJECT / "runs" / "never-committed.pt"  # runs/ is ignored by git
    loose.parent.mkdir(exist_ok=True)
    loose.write_bytes(b"x")
    try:
        with pytest.raises(store.StoredModelError, match="not committed as it is; commit it first"):
            store.committed(loose)
    finally:
        loose.unlink()
