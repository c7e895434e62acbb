"""Tests of rnnkit.data.registry and rnnkit.datasets: listing, pydocs, errors, real data sets."""

from __future__ import annotations

import hashlib
import sys

import pytest

from rnnkit.data import CharTokenizer, LabelledText, ParallelCorpus, WordTokenizer
from rnnkit.data.pydocs import build_pydocs_text
from rnnkit.datasets import DatasetInfo, list_datasets, load_dataset
from rnnkit.errors import DataError

FILE_SETS = ("eng_fra", "eng_fra_5k", "mr", "multi30k", "nab", "ptb", "tinyshakespeare")
SERIES = ("co2", "elec_equip", "elnino", "macrodata", "nile", "sunspots")
SHIPPED = ("airline", "lynx", "shampoo", "uschange")


def test_list_datasets_describes_every_set():
    infos = {info.name: info for info in list_datasets()}
    assert list(infos) == sorted(infos)
    assert set(infos) == {"pydocs", *FILE_SETS, *SERIES, *SHIPPED}
    assert all(isinstance(i, DatasetInfo) and i.description and i.splits for i in infos.values())
    assert infos["pydocs"].available and infos["pydocs"].kind == "text"
    assert infos["ptb"].splits == ("train", "val", "test")
    for info in infos.values():
        assert info.available == (info.reason == "")


def test_missing_rnnkit_data_names_the_setting_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    info = {i.name: i for i in list_datasets()}["tinyshakespeare"]
    assert not info.available and "RNNKIT_DATA" in info.reason
    with pytest.raises(DataError) as err:
        load_dataset("tinyshakespeare")
    assert str(err.value).endswith(
        "set RNNKIT_DATA to a folder containing tinyshakespeare/input.txt")
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("ptb", "train")
    message = str(err.value)
    assert str(tmp_path / "ptb" / "ptb.train.txt") in message and "not found" in message
    assert "set RNNKIT_DATA to a folder containing ptb/ptb.train.txt" in message
    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid"):
        (tmp_path / "ptb" / f"ptb.{split}.txt").write_text("a b\n", encoding="utf-8")
    with pytest.raises(DataError, match="ptb.test.txt not found .* a folder containing ptb/ptb.test.txt"):
        load_dataset("ptb")  # names the file that is missing, not the first one the set needs


def test_rnnkit_data_with_a_tilde_is_expanded(monkeypatch, tmp_path):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("0123456789" * 10, encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    monkeypatch.setenv("RNNKIT_DATA", f"~/{tmp_path.name}")  # as a quoted ~ reaches the program
    assert len(load_dataset("tinyshakespeare", "train")) == 90


def test_file_sets_read_from_a_folder_laid_out_like_the_readme(monkeypatch, tmp_path):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("0123456789" * 10, encoding="utf-8")
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    splits = load_dataset("tinyshakespeare")
    assert splits == {"train": ("0123456789" * 9), "val": "0123456789"}


def test_unknown_names_and_splits():
    with pytest.raises(DataError, match="unknown data set 'tinyshakespear'; did you mean "
                                        "'tinyshakespeare'"):
        load_dataset("tinyshakespear")
    with pytest.raises(DataError, match="data set 'nile' has no split 'train'; splits: all"):
        load_dataset("nile", "train")


def test_pydocs_is_deterministic_sized_and_cached_only_where_asked(tmp_path):
    build_pydocs_text.cache_clear()
    before = set(sys.modules)
    text = build_pydocs_text()
    assert not {"tkinter", "turtle", "idlelib", "antigravity", "this"} & (set(sys.modules) - before)
    assert 1_000_000 <= len(text.encode()) <= 3_000_000
    assert "The \"assert\" statement" in text and "module json" in text
    build_pydocs_text.cache_clear()
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert hashlib.sha256(build_pydocs_text().encode()).hexdigest() == digest
    splits = load_dataset("pydocs", cache_dir=tmp_path / "cache")
    assert splits["train"] + splits["val"] == text
    assert len(splits["train"]) == int(len(text) * 0.9)
    cached = list((tmp_path / "cache").iterdir())
    good = cached[0].read_bytes()
    assert len(cached) == 1 and good.decode().partition("\n")[2] == text  # after a SHA-256 line
    assert load_dataset("pydocs", "val", cache_dir=tmp_path / "cache") == splits["val"]
    cached[0].write_text("", encoding="utf-8")  # a cache an interrupted run emptied: built again
    assert load_dataset("pydocs", "val", cache_dir=tmp_path / "cache") == splits["val"]
    assert cached[0].read_bytes() == good


def test_a_damaged_or_cut_short_pydocs_cache_is_built_again(tmp_path):
    load_dataset("pydocs", cache_dir=tmp_path)
    (cache,) = tmp_path.iterdir()
    good = cache.read_bytes()
    for bad in (b"\xff bad", b"x" * 10, good[:-100], good.replace(b"assert", b"ASSERT", 1)):
        cache.write_bytes(bad)
        splits = load_dataset("pydocs", cache_dir=tmp_path)
        assert splits["train"] + splits["val"] == build_pydocs_text()
        assert cache.read_bytes() == good


@pytest.mark.parametrize("name", SERIES)
def test_statsmodels_series_load_offline(name, require_dataset):
    require_dataset(name)
    frame = load_dataset(name, "all")
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.index.dtype.kind == "M" and len(frame) >= 25
    assert not frame.isna().any().any() and (frame.dtypes == "float64").all()
    if name == "nile":
        assert len(frame) == 100 and frame["volume"].iloc[0] == 1120.0


def test_shipped_series_are_the_files_their_readme_names_and_load_as_documented():
    """rnnkit's own copies of aeon's series: checksums as recorded, then each file's known shape."""
    from importlib import resources

    pd = pytest.importorskip("pandas")
    folder = resources.files("rnnkit.data").joinpath("series")
    sums = dict(reversed(line.split()) for line in folder.joinpath("SHA256SUMS").read_text().splitlines())
    assert set(sums) == {f"{name}.csv" for name in SHIPPED}
    for file, digest in sums.items():
        assert hashlib.sha256(folder.joinpath(file).read_bytes()).hexdigest() == digest, file
    infos = {i.name: i for i in list_datasets()}
    for name in SHIPPED:
        assert infos[name].source == "rnnkit" and infos[name].available
        frame = load_dataset(name, "all")
        assert frame.index.is_monotonic_increasing and frame.index.is_unique and frame.index.name == "time"
        assert not frame.isna().any().any() and (frame.dtypes == "float64").all()
    airline = load_dataset("airline", "all")["passengers"]
    assert len(airline) == 144 and airline.iloc[0] == 112 and airline.iloc[-1] == 432
    assert list(airline.index) == list(pd.date_range("1949-01-01", periods=144, freq="MS"))
    lynx = load_dataset("lynx", "all")["trappings"]
    assert len(lynx) == 114 and lynx.index[0].year == 1821 and lynx.index[-1].year == 1934
    assert len(load_dataset("shampoo", "all")) == 36
    us = load_dataset("uschange", "all")
    assert us.shape == (187, 5) and list(us.columns) == ["consumption", "income", "production", "savings",
                                                        "unemployment"]
    assert list(us.index) == list(pd.date_range("1970-01-01", periods=187, freq="QS"))


# -- RNNKIT_DATA sets (skipped without RNNKIT_DATA unless RNNKIT_REQUIRE_DATA=1) ----------
def test_tinyshakespeare(require_dataset):
    require_dataset("tinyshakespeare")
    splits = load_dataset("tinyshakespeare")
    assert len(splits["train"]) == 1_003_854 and len(splits["val"]) == 111_540
    tok = CharTokenizer.train(splits["train"])
    assert tok.vocab_size == 66 and not tok.unknown_chars(splits["val"])


def test_ptb_word_counts_match_the_standard(require_dataset):
    require_dataset("ptb")
    splits = load_dataset("ptb")
    tok = WordTokenizer.train(splits["train"], eos_token="<eos>")
    assert tok.vocab_size == 10_000 and tok.unk_id == 0
    counts = {split: len(tok.encode(text)) for split, text in splits.items()}
    assert counts == {"train": 929_589, "val": 73_760, "test": 82_430}


def test_mr(require_dataset):
    require_dataset("mr")
    data = load_dataset("mr", "all")
    assert isinstance(data, LabelledText) and data.classes == ("neg", "pos")
    assert data.labels.count(0) == data.labels.count(1) == 5_331


def test_translation_sets(require_dataset):
    for name in ("eng_fra", "eng_fra_5k", "multi30k"):
        require_dataset(name)
    full, small = load_dataset("eng_fra", "all"), load_dataset("eng_fra_5k", "all")
    assert isinstance(full, ParallelCorpus) and len(full) == 142_787 and len(small) == 5_000
    assert small[0] == ("Go.", "Va !")
    m30k = load_dataset("multi30k")
    assert {k: len(v) for k, v in m30k.items()} == {"train": 29_000, "val": 1_014, "test": 1_000}
    en_fr = load_dataset("multi30k", "val", source="en", target="fr")
    assert en_fr.sources == m30k["val"].sources and en_fr.targets != m30k["val"].targets


def test_every_available_set_loads_with_the_network_cut(monkeypatch, tmp_path):
    """Nothing is downloaded: with every socket connection refused, each set available here loads
    (pydocs from the installed Python, statsmodels series from the package, airline and the other
    shipped series from rnnkit's own package data, the rest from RNNKIT_DATA)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    available = [d.name for d in list_datasets() if d.available]
    assert {"pydocs", "nile", "airline"} <= set(available)
    for name in available:
        splits = load_dataset(name, cache_dir=tmp_path)
        assert splits and all(data is not None for data in splits.values()), name


def test_an_unknown_data_set_option_is_named():
    """Not the loader's TypeError naming a private function (_mr(), a lambda)."""
    with pytest.raises(DataError, match="data set 'airline' has no option 'foo'; it takes none"):
        load_dataset("airline", foo=1)
    with pytest.raises(DataError, match="data set 'pydocs' has no option 'x'"):
        load_dataset("pydocs", x=1)
