"""Tests of rnnkit.data.text and corpora: reading, LM streams, windows, labelled/parallel text."""

from __future__ import annotations

import gzip
import zipfile

import pytest
import torch

from rnnkit.data import LabelledText, LMStream, ParallelCorpus, TextWindows, read_lines, read_text
from rnnkit.errors import DataError


# -- reading ------------------------------------------------------------------------------
def test_read_text_reports_line_byte_and_offset_of_bad_utf8(tmp_path):
    path = tmp_path / "data.txt"
    data = b"first line\nsecond\nthird \xff here\n"
    path.write_bytes(data)
    offset = data.index(b"\xff")
    expected = (f"{path} line 3: not UTF-8 (byte 0xff at offset {offset}); "
                "re-save the file as UTF-8")
    with pytest.raises(DataError) as info:
        read_text(path)
    assert str(info.value) == expected and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_read_text_refuses_empty_files(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty.txt: file is (empty|only whitespace)"):
        read_text(path)
    assert read_text(path, allow_empty=True) == content.decode()


def test_read_text_missing_gz_bom_and_crlf(tmp_path):
    with pytest.raises(DataError, match="missing.txt: file not found"):
        read_text(tmp_path / "missing.txt")
    path = tmp_path / "t.txt.gz"
    path.write_bytes(gzip.compress("\ufeffa\r\nb\u2028c\n".encode()))
    assert read_text(path) == "a\nb\u2028c\n"
    assert read_lines(path) == ["a", "b\u2028c"]  # split on \n only
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="bad.gz: not a valid gzip file"):
        read_text(tmp_path / "bad.gz")


# -- LMStream -----------------------------------------------------------------------------
def test_lmstream_batchify_layout_and_continuity():
    ids = torch.arange(103)
    stream = LMStream(ids, batch_size=4, seq_len=5)
    assert stream.stateful is True
    rows = ids[:100].view(4, 25)  # row b is the contiguous chunk ids[25b : 25b+25]
    assert torch.equal(stream.data, rows)
    batches = list(stream.iter_batches(epoch=0))
    assert len(batches) == len(stream) == 5  # ceil(24 / 5): the last batch has T = 4
    assert [b["input_ids"].shape for b in batches] == [(4, 5)] * 4 + [(4, 4)]
    for k, batch in enumerate(batches):
        assert batch["input_ids"].dtype == torch.long
        assert torch.equal(batch["input_ids"], rows[:, 5 * k : min(5 * k + 5, 24)])
        assert torch.equal(batch["targets"], batch["input_ids"] + 1)
        batch["targets"].view(-1)  # contiguous: flattening for the loss works
    # Row b of batch k+1 continues row b of batch k: concatenated, they are the row itself.
    assert torch.equal(torch.cat([b["input_ids"] for b in batches], dim=1), rows[:, :24])
    assert torch.equal(torch.cat([b["targets"] for b in batches], dim=1), rows[:, 1:])


def test_lmstream_drop_last_and_epochs():
    stream = LMStream(list(range(103)), batch_size=4, seq_len=5, drop_last=True)
    assert len(stream) == 4 and all(b["input_ids"].shape == (4, 5) for b in stream)
    first = [b["input_ids"] for b in stream.iter_batches(epoch=0)]
    later = [b["input_ids"] for b in stream.iter_batches(epoch=3)]
    assert all(torch.equal(a, b) for a, b in zip(first, later))  # never shuffled


def test_lmstream_splits_rows_between_ranks():
    stream = LMStream(torch.arange(200), batch_size=4, seq_len=6)
    full = list(stream.iter_batches(0))
    parts = [list(stream.iter_batches(0, rank=r, world_size=2)) for r in range(2)]
    assert all(len(p) == len(full) for p in parts)
    for k, batch in enumerate(full):
        assert parts[0][k]["input_ids"].shape == (2, batch["input_ids"].shape[1])
        joined = torch.cat([parts[0][k]["input_ids"], parts[1][k]["input_ids"]])
        assert torch.equal(joined, batch["input_ids"])
    with pytest.raises(ValueError, match="not divisible by world_size 3"):
        next(stream.iter_batches(0, rank=0, world_size=3))


def test_lmstream_too_short_and_from_text():
    with pytest.raises(DataError, match="7 tokens are too few for batch_size 4"):
        LMStream(range(7), batch_size=4, seq_len=3)

    class Bytes:
        def encode(self, text: str) -> list[int]:
            return list(text.encode())

    stream = LMStream.from_text("abcdefgh", Bytes(), batch_size=2, seq_len=2)
    assert stream.data.tolist() == [[97, 98, 99, 100], [101, 102, 103, 104]]
    with pytest.raises(DataError, match="0 tokens are too few"):  # not "token ids must be integers"
        LMStream.from_text("", Bytes(), batch_size=2, seq_len=2)


# -- TextWindows --------------------------------------------------------------------------
def test_text_windows_items_and_loader_batches():
    ids = torch.arange(50)
    ds = TextWindows(ids, seq_len=4)
    assert ds.stateful is False and not hasattr(ds, "iter_batches")  # the trainer batches it
    assert len(ds) == 12  # starts 0, 4, ..., 44 (each needs 5 tokens)
    item = ds[2]
    assert item["input_ids"].tolist() == [8, 9, 10, 11]
    assert item["targets"].tolist() == [9, 10, 11, 12]
    assert torch.equal(ds[-1]["input_ids"], ids[44:48])
    assert len(TextWindows(ids, seq_len=4, stride=1)) == 46
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    starts = []
    for batch in loader:
        assert torch.equal(batch["targets"], batch["input_ids"] + 1)
        starts += batch["input_ids"][:, 0].tolist()
    assert sorted(starts) == list(range(0, 48, 4)) and starts != sorted(starts)
    with pytest.raises(DataError, match="shorter than one window"):
        TextWindows(range(4), seq_len=4)
    with pytest.raises(IndexError):
        ds[12]


# -- LabelledText -------------------------------------------------------------------------
def test_labelled_text_from_csv_and_tsv(tmp_path):
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text('text,label\n"good, really",pos\nbad,neg\nfine,pos\n', encoding="utf-8")
    data = LabelledText.from_csv(csv_path)
    assert data.classes == ("neg", "pos") and data.labels == (1, 0, 1)
    assert data[0] == ("good, really", 1) and len(data) == 3
    tsv_path = tmp_path / "digits.tsv"
    tsv_path.write_text('label\tsentence\n10\the said "hi\n2\tok\n', encoding="utf-8")
    digits = LabelledText.from_csv(tsv_path, text_col="sentence")
    assert digits.classes == ("2", "10")  # numeric labels sort as numbers
    assert digits.texts == ('he said "hi', "ok")  # an unbalanced quote in a TSV is just text
    odd = tmp_path / "odd.csv"
    odd.write_text("text,label\nfoo,--1\nbar,1\nbaz,²\n", encoding="utf-8")
    assert LabelledText.from_csv(odd).classes == ("--1", "1", "²")  # not int(): strings, sorted
    with pytest.raises(DataError, match="same column 'text'"):
        LabelledText.from_csv(odd, label_col="text")
    with pytest.raises(TypeError, match="text_col: expected a column name or index, got True"):
        LabelledText.from_csv(odd, text_col=True)
    odd.write_text("text,text,label\na,b,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="column 'text' appears twice"):
        LabelledText.from_csv(odd)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("text,label\na,x\nb,y,z\n", r"reviews.csv line 3: 3 fields but the header has 2"),
        ("body,label\na,x\n", r"reviews.csv: no column 'text'; available columns: body, label"),
        ("text,label\na,x\n,y\n", r"reviews.csv line 3: empty text in column 'text'"),
        ("text,label\n", r"reviews.csv: no rows after the header"),
    ],
)
def test_labelled_text_bad_csv(tmp_path, content, pattern):
    path = tmp_path / "reviews.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        LabelledText.from_csv(path)


def test_labelled_text_from_folder_and_line_files(tmp_path):
    for cls, texts in {"spam": ["buy now", "win"], "ham": ["hello"]}.items():
        (tmp_path / cls).mkdir()
        for i, text in enumerate(texts):
            (tmp_path / cls / f"{i}.txt").write_text(text, encoding="utf-8")
    data = LabelledText.from_folder(tmp_path)
    assert data.classes == ("ham", "spam")
    assert list(zip(data.texts, data.labels)) == [("hello", 0), ("buy now", 1), ("win", 1)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no files"):
        LabelledText.from_folder(tmp_path)
    (tmp_path / "p.txt").write_text("a\n\nb\n", encoding="utf-8")
    (tmp_path / "n.txt").write_text("c\n", encoding="utf-8")
    lines = LabelledText.from_line_files({"neg": tmp_path / "n.txt", "pos": tmp_path / "p.txt"})
    assert lines.classes == ("neg", "pos") and lines.texts == ("c", "a", "b")
    assert lines.labels == (0, 1, 1)


def test_labelled_text_split_is_stratified_seeded_and_disjoint():
    data = LabelledText(tuple(map(str, range(100))), tuple([0] * 80 + [1] * 20), ("a", "b"))
    rest, held = data.split(0.25, seed=3)
    assert len(held) == 25 and held.labels.count(1) == 5
    assert set(rest.texts).isdisjoint(held.texts) and len(rest) + len(held) == 100
    assert data.split(0.25, seed=3)[1] == held and data.split(0.25, seed=4)[1] != held


# -- ParallelCorpus -----------------------------------------------------------------------
def test_parallel_corpus_from_tsv_and_zip(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Go.\tVa !\tCC-BY\n\nHi.\tSalut !\tCC-BY\n", encoding="utf-8")
    corpus = ParallelCorpus.from_tsv(path)
    assert corpus.sources == ("Go.", "Hi.") and corpus[1] == ("Hi.", "Salut !")
    archive = tmp_path / "pairs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("_about.txt", "about")
        zf.writestr("fra.txt", "Run!\tCours !\n")
    assert ParallelCorpus.from_tsv(archive)[0] == ("Run!", "Cours !")
    path.write_text("Go.\tVa !\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv line 2: 1 tab-separated field\(s\), need 2"):
        ParallelCorpus.from_tsv(path)


def test_parallel_corpus_from_line_aligned_gz_files(tmp_path):
    en, de = tmp_path / "train.en.gz", tmp_path / "train.de.gz"
    en.write_bytes(gzip.compress(b"a dog\na cat\n"))
    de.write_bytes(gzip.compress("ein Hund\neine Katze\n".encode()))
    corpus = ParallelCorpus.from_files(en, de)
    assert list(corpus) == [("a dog", "ein Hund"), ("a cat", "eine Katze")]
    de.write_bytes(gzip.compress(b"ein Hund\n"))
    with pytest.raises(DataError) as info:
        ParallelCorpus.from_files(en, de)
    message = str(info.value)
    assert f"{en} has 2 lines but {de} has 1" in message and "line-aligned" in message
    held = ParallelCorpus(tuple("abcdefghij"), tuple("ABCDEFGHIJ")).split(0.3, seed=0)[1]
    assert len(held) == 3 and all(s.upper() == t for s, t in held)


def test_parallel_corpus_from_tsv_with_lone_cr_line_ends(tmp_path):
    path = tmp_path / "cr.tsv"
    path.write_bytes(b"Go.\tVa !\rHi.\tSalut.\r")
    corpus = ParallelCorpus.from_tsv(path)
    assert list(corpus) == [("Go.", "Va !"), ("Hi.", "Salut.")]


def test_nab_labels_with_bad_entries_name_the_file_and_series(tmp_path):
    pytest.importorskip("pandas")
    from rnnkit.data._sets import _nab_times
    path, key = tmp_path / "combined_windows.json", "realKnownCause/nyc_taxi.csv"
    spans = _nab_times(path, key, [["2014-11-01 19:48:00.000000", "2014-11-02 00:00:00"]], pairs=True)
    assert [str(t) for t in spans[0]] == ["2014-11-01 19:48:00", "2014-11-02 00:00:00"]
    for entries in ([["garbage", "2014"]], [["a"]], [[None, "2014"]], ["2014"], {"a": 1}):
        with pytest.raises(DataError, match=r"combined_windows.json: 'realKnownCause/nyc_taxi.csv' holds "
                                            r".*, not a (list of )?\[start, end\] pair"):
            _nab_times(path, key, entries, pairs=True)
    with pytest.raises(DataError, match=r"labels.json: 'k' holds 3, not a timestamp"):
        _nab_times(tmp_path / "labels.json", "k", [3], pairs=False)
