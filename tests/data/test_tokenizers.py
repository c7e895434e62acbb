"""Tests of rnnkit.data.tokenizers: round trips, vocabularies, unknowns, JSON files."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    is_word_char,
    load_tokenizer,
    trailing_word,
)
from rnnkit.errors import DataError

TEXT = "the cat sat on the mat.\nthe dog sat on the log!\n" * 20


# -- characters --------------------------------------------------------------------------
def test_char_vocab_is_unk_then_sorted_chars():
    tok = CharTokenizer.train("banana")
    assert tok.vocab == ["<unk>", "a", "b", "n"]
    assert tok.unk_id == 0 and tok.vocab_size == 4 == len(tok)
    assert tok.encode("nab") == [3, 1, 2]


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_char_round_trip_any_text(text):
    tok = CharTokenizer().fit(text)
    assert tok.decode(tok.encode(text)) == text
    assert not tok.unknown_chars(text)


def test_char_unknown_maps_to_unk_and_is_reported():
    tok = CharTokenizer.train(["abc", "cde"])
    ids = tok.encode("axe")
    assert ids[1] == tok.unk_id == 0
    assert tok.decode(ids) == "a\ufffde"
    assert tok.unknown_chars("axez") == {"x", "z"}


def test_char_without_unk_raises_naming_the_character():
    tok = CharTokenizer.train("abc", unk_token=None)
    assert tok.unk_id is None and tok.vocab == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("abz")


def test_char_from_ready_vocabulary():
    tok = CharTokenizer(["x", "y"])
    assert tok.encode("yx") == [2, 1]


def test_unfitted_and_bad_ids_raise():
    with pytest.raises(ValueError, match="not fitted"):
        CharTokenizer().encode("a")
    tok = CharTokenizer.train("ab")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 3])


# -- words --------------------------------------------------------------------------------
def test_word_eos_marks_each_line_end_and_decodes_back():
    tok = WordTokenizer.train(TEXT, eos_token="<eos>")
    assert tok.vocab[:2] == ["<unk>", "<eos>"] and tok.eos_id == 1
    text = "the cat sat\non the mat.\n"
    ids = tok.encode(text)
    words = [tok.vocab[i] for i in ids]
    assert words == ["the", "cat", "sat", "<eos>", "on", "the", "mat.", "<eos>"]
    assert tok.decode(ids) == text
    assert tok.encode("the cat")[-1] != tok.eos_id  # a prompt gets no <eos>


def test_word_vocab_order_max_vocab_and_min_freq():
    text = "b a c a b a d"
    tok = WordTokenizer.train(text)
    assert tok.vocab == ["<unk>", "a", "b", "c", "d"]  # by count, ties alphabetical
    small = WordTokenizer.train(text, max_vocab=3)
    assert small.vocab == ["<unk>", "a", "b"]
    assert small.encode("a c") == [1, 0] and small.unknown_words("a c d") == {"c", "d"}
    frequent = WordTokenizer.train(text, min_freq=2)
    assert frequent.vocab == ["<unk>", "a", "b"]


def test_word_existing_unk_tokens_are_not_duplicated():
    tok = WordTokenizer.train("a <unk> b <unk>")
    assert tok.vocab.count("<unk>") == 1
    assert tok.encode("<unk> zzz") == [0, 0]


def test_word_without_unk_raises_naming_the_word():
    tok = WordTokenizer.train("a b", unk_token=None)
    with pytest.raises(DataError, match="'zebra' is not in the vocabulary"):
        tok.encode("a zebra")


def test_word_lower_and_punctuation_split():
    tok = WordTokenizer.train("Hello, world! Don't.", lower=True, split="words")
    words = [tok.vocab[i] for i in tok.encode("HELLO world, don't")]
    assert words == ["hello", "world", ",", "don't"]


# -- subwords -----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_subword_round_trip_and_json(model, tmp_path):
    tok = SubwordTokenizer.train(TEXT, model=model, vocab_size=60, min_freq=1)
    assert 2 < tok.vocab_size <= 60 and tok.unk_id == 0
    text = " the dog sat on the mat.\nthe cat!\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text)  # merged pieces, not single characters
    path = tok.save(tmp_path)
    assert path.name == "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["type"] == "subword" and data["hf"]["model"]["type"].lower() == model
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, SubwordTokenizer) and loaded == tok
    assert loaded.encode(text) == ids


def test_subword_unknown_character():
    tok = SubwordTokenizer.train(TEXT, vocab_size=50, min_freq=1)
    assert tok.unk_id in tok.encode("the ☃")
    assert tok.unknown_tokens("the ☃ cat") == {"☃"}


def test_subword_without_tokenizers_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes "import tokenizers" fail
    with pytest.raises(ImportError, match=r"pip install 'rnnkit\[text\]'"):
        SubwordTokenizer.train(TEXT)


# -- files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tok",
    [CharTokenizer.train(TEXT), WordTokenizer.train(TEXT, eos_token="<eos>", max_vocab=8),
     CharTokenizer.train("ab", unk_token=None)],
)
def test_json_and_file_round_trip(tok, tmp_path):
    again = Tokenizer.from_json(tok.to_json())
    assert type(again) is type(tok) and again == tok
    sample = tok.decode(range(tok.vocab_size))
    assert again.encode(sample) == tok.encode(sample)
    path = tok.save(tmp_path / "tok.json")
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == tok.type_name
    assert load_tokenizer(path) == tok
    assert type(tok).load(path) == tok


def test_bad_tokenizer_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"type": "char",\n "vocab": [1,]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"tokenizer.json line 2: invalid JSON"):
        load_tokenizer(tmp_path)
    bad.write_text('{"type": "morse", "version": 1}', encoding="utf-8")
    with pytest.raises(DataError, match=r"unknown tokenizer type 'morse'; expected one of: char"):
        load_tokenizer(bad)
    bad.write_text('{"type": "char", "version": 1, "unk_token": "<unk>"}', encoding="utf-8")
    with pytest.raises(DataError, match=r"tokenizer.json: malformed 'char' tokenizer"):
        load_tokenizer(bad)
    bad.write_text('{"type": "char", "version": 99}', encoding="utf-8")
    with pytest.raises(DataError, match="version 99"):
        load_tokenizer(bad)
    with pytest.raises(DataError, match="nope.json: file not found"):
        load_tokenizer(tmp_path / "nope.json")


def test_loading_the_wrong_type_is_refused(tmp_path):
    path = WordTokenizer.train(TEXT).save(tmp_path)
    with pytest.raises(DataError, match="holds a 'word' tokenizer, not 'char'"):
        CharTokenizer.load(path)


# -- word boundaries ----------------------------------------------------------------------
def test_word_boundary_helpers():
    assert all(is_word_char(c) for c in "aZ9_'é")
    assert not any(is_word_char(c) for c in " .,!-\n")
    assert trailing_word("the qui") == "qui"
    assert trailing_word("don't wor") == "wor" and trailing_word("don't") == "don't"
    assert trailing_word("end. ") == ""
    with pytest.raises(ValueError):
        is_word_char("ab")


def test_a_tokenizers_dict_is_a_copy_both_ways():
    """Editing to_dict()'s vocabulary, or the dict a tokenizer came from, must not change it."""
    for tok in (CharTokenizer.train("abc"), WordTokenizer().fit("a b c")):
        before = tok.vocab
        tok.to_dict()["vocab"].append("z")
        data = tok.to_dict()
        again = Tokenizer.from_dict(data)
        data["vocab"].reverse()
        assert tok.vocab == before and again.vocab == before


def test_settings_that_could_not_load_back_are_refused():
    with pytest.raises(ValueError, match="unk_token and eos_token must differ"):
        WordTokenizer(unk_token="<x>", eos_token="<x>")
    with pytest.raises(ValueError, match="unk_token must not be a single character"):
        CharTokenizer(unk_token="?")  # '?' is also a character of most texts
    assert CharTokenizer(chars="aab").vocab == ["<unk>", "a", "b"]


def test_subword_vocabulary_too_small_is_a_data_error():
    pytest.importorskip("tokenizers")
    with pytest.raises(DataError, match="unigram vocabulary of vocab_size=5: .*larger vocab_size"):
        SubwordTokenizer(model="unigram", vocab_size=5).fit("hello world")


def test_fits_and_ids_that_would_fail_later_fail_now(tmp_path):
    with pytest.raises(DataError, match="no word occurs at least min_freq=5 times"):
        WordTokenizer(min_freq=5).fit("a b c")  # was vocab_size 0, then "not fitted" at encode
    char = CharTokenizer.train("abc")
    with pytest.raises(ValueError, match="token ids must be integers, got 1.9"):
        char.decode([1.9])  # int() made it 1
    word = WordTokenizer().fit("a b c")
    data = word.to_dict()
    data["lower"] = "no"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match='"lower" must be true or false'):
        load_tokenizer(path)


# -- QA findings: unknown whitespace, constructor and file checks, save paths -------------------
def test_subword_unknown_tokens_reports_whitespace():
    pytest.importorskip("tokenizers")
    tok = SubwordTokenizer(vocab_size=60).fit(["ab", "cd"])  # no space, tab or NBSP in the text
    text = "ab cd\tx\r\u00a0\u3000\u2028"
    assert tok.unknown_tokens(text) == {" ", "\t", "x", "\r", "\u00a0", "\u3000", "\u2028"}
    assert tok.encode(text).count(tok.unk_id) == 7
    spaced = SubwordTokenizer(vocab_size=60).fit("ab cd ab cd")
    assert spaced.unknown_tokens("ab cd\tab") == {"\t"}


def test_char_vocabulary_argument_is_checked_like_a_file():
    with pytest.raises(ValueError, match="chars must be single characters, got '<unk>'"):
        CharTokenizer(chars=["a", "<unk>"])
    with pytest.raises(ValueError, match="chars must be single characters, got 'ab'"):
        CharTokenizer(chars=["ab", "c"])
    assert CharTokenizer(chars=["a", "b", "a"]).vocab == ["<unk>", "a", "b"]


def test_encode_refuses_non_text_and_decode_refuses_strings():
    char, word = CharTokenizer.train("abc"), WordTokenizer().fit("a b")
    for tok in (char, word):
        for bad in (b"abc", 3):
            with pytest.raises(TypeError, match=r"encode expects a str, got (bytes|int)"):
                tok.encode(bad)
        with pytest.raises(ValueError, match="token ids must be integers, got '1'"):
            tok.decode(["1"])
    assert char.decode([1, 2.0]) == "ab"
    for unfitted in (CharTokenizer(), WordTokenizer()):
        with pytest.raises(ValueError, match="is not fitted"):
            unfitted.decode([0])


def test_save_gz_loads_back_and_bad_folders_are_named(tmp_path):
    tok = CharTokenizer.train("abc")
    path = tok.save(tmp_path / "t.json.gz")
    assert path.read_bytes()[:2] == b"\x1f\x8b" and load_tokenizer(path) == tok
    with pytest.raises(FileNotFoundError, match=r"no[/\\]such: folder not found"):
        tok.save(tmp_path / "no" / "such" / "t.json")
    with pytest.raises(FileNotFoundError, match="newdir: folder not found"):
        tok.save(f"{tmp_path}/newdir/")
    assert not (tmp_path / "newdir").exists()
    (tmp_path / "newdir").mkdir()
    assert tok.save(f"{tmp_path}/newdir/") == tmp_path / "newdir" / "tokenizer.json"


def _write_state(tmp_path, data):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_word_files_with_settings_that_do_not_fit_are_refused(tmp_path):
    data = WordTokenizer(eos_token="<eos>", max_vocab=3).fit("a a b\nc").to_dict()
    for key, value, message in (("max_vocab", 2.5, "max_vocab must be an integer or None, got 2.5"),
                                ("max_vocab", 2, "max_vocab must exceed the 2 special tokens"),
                                ("min_freq", "1", "min_freq must be an integer >= 1"),
                                ("unk_token", 0, "unk_token must be a string or None")):
        path = _write_state(tmp_path, {**data, key: value})
        with pytest.raises(DataError, match=f"tokenizer.json: .*{message}"):
            load_tokenizer(path)
    path = _write_state(tmp_path, {**data, "vocab": data["vocab"] + ["b", "c"]})
    with pytest.raises(DataError, match='tokenizer.json: "vocab" holds 5 tokens, more than max_vocab=3'):
        load_tokenizer(path)


def test_subword_files_with_settings_that_do_not_fit_are_refused(tmp_path):
    pytest.importorskip("tokenizers")
    data = SubwordTokenizer(vocab_size=50, special_tokens=["<pad>"]).fit("hello world hello").to_dict()
    for key, value, message in (("unk_token", "<zzz>", "special token '<zzz>' is not in the embedded"),
                                ("special_tokens", ["<bos>"], "special token '<bos>' is not in the embedded"),
                                ("special_tokens", "<pad>", '"special_tokens" must be a list of strings'),
                                ("special_tokens", [3], "must be non-empty strings"),
                                ("lower", "yes", "lower must be True or False"),
                                ("min_freq", -1, "min_freq must be an integer >= 0"),
                                ("vocab_size", 50.5, "vocab_size must be an integer >= 1")):
        path = _write_state(tmp_path, {**data, key: value})
        with pytest.raises(DataError, match=f"tokenizer.json: .*{message}"):
            load_tokenizer(path)


def test_bad_arguments_are_refused_at_construction():
    with pytest.raises(ValueError, match="max_vocab must be an integer or None, got 3.5"):
        WordTokenizer(max_vocab=3.5)
    with pytest.raises(ValueError, match="min_freq must be an integer >= 0, got -3"):
        SubwordTokenizer(vocab_size=100, min_freq=-3)
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1, got 100.5"):
        SubwordTokenizer(vocab_size=100.5)
    with pytest.raises(ValueError, match="must all differ"):
        SubwordTokenizer(special_tokens=["<unk>"])


def test_word_fit_on_text_without_words_says_so():
    with pytest.raises(DataError, match="no word in the training text"):
        WordTokenizer(eos_token="<eos>").fit("      \n   ")


def test_lm_recipe_blames_no_option_for_a_text_without_words():
    from rnnkit.cli_options import field_docs
    from rnnkit.recipes.lm import LMDataConfig, build_tokenizer
    with pytest.raises(DataError, match="^no word in the training text") as info:
        build_tokenizer("word", "          \n", 100)
    assert "vocab_size" not in str(info.value) and "min_freq" not in str(info.value)
    assert "max(max_chars // 9, 1000)" in field_docs(LMDataConfig)["max_chars"]
