"""rnnkit.data: tokenizers, text streams, corpora, time series, synthetic tasks, data sets.

Nothing here reads a file or downloads anything on import; pandas, statsmodels and Hugging
Face ``tokenizers`` are imported only when a function that needs them runs.
"""

from __future__ import annotations

from rnnkit.data._io import read_lines, read_text
from rnnkit.data._sets import AnomalySeries
from rnnkit.data.corpora import LabelledText, ParallelCorpus
from rnnkit.data.registry import DatasetInfo, dataset_info, list_datasets, load_dataset
from rnnkit.data.scaling import Scaler
from rnnkit.data.synthetic import (
    IGNORE_INDEX,
    SyntheticTask,
    adding_problem,
    adding_problem_baseline,
    copy_memory,
    copy_memory_baseline,
    parity,
    parity_baseline,
    selective_copy,
    selective_copy_baseline,
)
from rnnkit.data.text import LMStream, TextWindows
from rnnkit.data.timeseries import Window, WindowDataset, read_series_csv, split_series
from rnnkit.data.tokenizers import (
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
    WordTokenizer,
    is_word_char,
    load_tokenizer,
    trailing_word,
)

__all__ = [
    # tokenizers
    "Tokenizer", "CharTokenizer", "WordTokenizer", "SubwordTokenizer", "load_tokenizer",
    "is_word_char", "trailing_word",
    # text
    "read_text", "read_lines", "LMStream", "TextWindows", "LabelledText", "ParallelCorpus",
    # time series
    "read_series_csv", "split_series", "WindowDataset", "Window", "Scaler",
    # synthetic tasks
    "SyntheticTask", "IGNORE_INDEX", "adding_problem", "adding_problem_baseline",
    "copy_memory", "copy_memory_baseline", "selective_copy", "selective_copy_baseline",
    "parity", "parity_baseline",
    # named data sets
    "DatasetInfo", "dataset_info", "list_datasets", "load_dataset", "AnomalySeries",
]
