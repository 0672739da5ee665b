"""Tokenizers against transformers 5.24 (the oracle), on tokenizers trained in this session.

Two tiny tokenizers are trained once per session, with no binary fixtures committed: a SentencePiece unigram
model with SigLIP's c4 id layout (pad 0, eos 1, unk 2, no bos) and a Gemma-shaped BPE ``tokenizer.json`` (byte
fallback, " " -> "▁", <pad>/<eos>/<bos>/<unk>/<mask> = 0..4, post-processor ``$A <eos>``). They go into hub-like
folders: SigLIP v1, SigLIP2 NaFlex (``model_type`` "siglip2") and SigLIP2 FixRes (``model_type`` "siglip" with a
``GemmaTokenizer`` config). transformers' ``AutoTokenizer`` and ours load the same folder and must agree exactly.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import siglip
from siglip.auto import AutoTokenizer
from siglip.files import CheckpointError
from siglip.tokenization import GemmaTokenizer, Siglip2Tokenizer, SiglipTokenizer

from builders import (  # noqa: E402  (tests/ is on sys.path)
    corpus,
    gemma_tokenizer_json,
    train_sentencepiece,
    write_gemma_tokenizer,
    write_json,
    write_siglip_tokenizer,
)

LONG = "A picture of a laptop with the lockscreen on, a cup of cappucino, salt and pepper grinders. " * 12

TEXTS = [
    "the real mountain view",
    "Zürich",
    "San Francisco",
    "This is a photo of a cat.",
    "what's in the image? 2-3 cats!!",
    "",
    " ",
    "  \t\n  ",
    "hi</s>",
    "hi </s> there",
    "</s>",
    "</s></s>x",
    "a <unk> b",
    "hi<eos>",
    "<pad><bos> <mask>",
    "HELLO WORLD",
    "naïve café résumé Ångström straße",
    "東京 北京 猫 写真",
    "こんにちは世界",
    "안녕하세요 Москва γειά σου مرحبا",
    "🙂🐱🚀 👍🏽",
    "!!!???...,,,;;;",
    "a  b\t\tc\n\nd",
    "▁leading underline ▁▁",
    "nbsp\u00a0and\u3000ideographic space",
    "ﬁ ligature Ⅻ ① e\u0301 zero\u200bwidth",
    "ʘ Ж ǂ unseen letters",
    "x" * 300,
    LONG,
]

OPTIONS = [
    {},
    {"padding": "max_length", "truncation": True},
    {"padding": "max_length", "truncation": True, "max_length": 16},
    {"padding": "max_length", "max_length": 20},
    {"padding": True},
    {"padding": "longest", "truncation": True, "max_length": 8},
    {"truncation": True},
    {"max_length": 5},
    {"padding": "do_not_pad", "max_length": 5},
    {"truncation": "only_first", "max_length": 1},
    {"padding": "max_length", "truncation": True, "return_attention_mask": True},
    {"padding": True, "padding_side": "left", "return_attention_mask": True},
    {"padding": True, "pad_to_multiple_of": 8, "return_attention_mask": True},
    {"padding": "max_length", "truncation": True, "max_length": 16, "pad_to_multiple_of": 8},
    {"add_special_tokens": False, "padding": True},
    {"add_special_tokens": False, "truncation": True, "max_length": 3},
    {"padding": True, "return_attention_mask": False},
]

FOLDERS = ["siglip", "siglip2", "fixres"]

# transformers' SiglipTokenizer warns on every text that already ends in </s> ("hi</s>"); the oracle's noise.
pytestmark = pytest.mark.filterwarnings("ignore:This sequence already has")


# ------------------------------------------------------------------------------------------------------------
# Fixtures: tokenizers trained here, written as hub folders
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    lines = corpus()
    write_siglip_tokenizer(root / "siglip", lines)
    gemma = gemma_tokenizer_json(lines)
    write_gemma_tokenizer(root / "siglip2", gemma, "siglip2")
    write_gemma_tokenizer(root / "fixres", gemma, "siglip")
    return {"siglip": root / "siglip", "siglip2": root / "siglip2", "fixres": root / "fixres"}


def hf_load(folder: Path, **kwargs):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)


@pytest.fixture(scope="session")
def both(folders):
    """name -> (ours, transformers'), each loaded once per session."""
    loaded: dict[str, tuple] = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = (AutoTokenizer.from_pretrained(folders[name]), hf_load(folders[name]))
        return loaded[name]

    return get


def variant(
    folders, tmp_path: Path, base: str, *, config=None, model_config=None, tokenizer_json=None, remove=()
) -> Path:
    """A copy of a fixture folder with edited JSON files (each edit: dict -> None, in place) or files removed."""
    folder = tmp_path / f"{base}-variant"
    shutil.copytree(folders[base], folder)
    for name, edit in (
        ("tokenizer_config.json", config),
        ("config.json", model_config),
        ("tokenizer.json", tokenizer_json),
    ):
        if edit is not None:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            edit(data)
            write_json(folder / name, data)
    for name in remove:
        (folder / name).unlink()
    return folder


def assert_same_encoding(ours, theirs, texts=TEXTS, options=({},)) -> None:
    for kwargs in options:
        assert dict(ours(texts, **kwargs)) == dict(theirs(texts, **kwargs)), kwargs
        for text in texts:
            assert dict(ours(text, **kwargs)) == dict(theirs(text, **kwargs)), (kwargs, text)


# ------------------------------------------------------------------------------------------------------------
# Which class a folder gives
# ------------------------------------------------------------------------------------------------------------


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _pop(key):
    return lambda d: d.pop(key)


@pytest.mark.parametrize(
    "base, edits, expected",
    [
        ("siglip", {}, SiglipTokenizer),
        ("siglip2", {}, Siglip2Tokenizer),
        ("fixres", {}, GemmaTokenizer),
        ("fixres", {"config": _set("tokenizer_class", "GemmaTokenizerFast")}, GemmaTokenizer),
        ("fixres", {"config": _set("tokenizer_class", "Siglip2Tokenizer")}, Siglip2Tokenizer),
        ("siglip2", {"config": _set("tokenizer_class", "Siglip2Tokenizer")}, Siglip2Tokenizer),
        ("siglip2", {"config": _set("tokenizer_class", "PreTrainedTokenizerFast")}, Siglip2Tokenizer),
        ("siglip2", {"config": _pop("tokenizer_class")}, Siglip2Tokenizer),
        ("siglip2", {"remove": ["config.json"]}, GemmaTokenizer),
        ("siglip", {"remove": ["config.json"]}, SiglipTokenizer),
        ("siglip", {"config": _pop("tokenizer_class")}, SiglipTokenizer),
        ("siglip", {"remove": ["tokenizer_config.json", "special_tokens_map.json"]}, SiglipTokenizer),
    ],
)
def test_auto_tokenizer_picks_the_class_transformers_picks(folders, tmp_path, base, edits, expected):
    folder = variant(folders, tmp_path, base, **edits)
    ours, theirs = AutoTokenizer.from_pretrained(folder), hf_load(folder)
    assert type(ours) is expected
    assert type(ours).__name__ == type(theirs).__name__
    assert_same_encoding(ours, theirs, options=({}, {"padding": "max_length", "truncation": True, "max_length": 12}))


def test_fixres_gemma_does_not_lowercase_and_naflex_does(both):
    fixres, naflex = both("fixres")[0], both("siglip2")[0]
    assert fixres("HELLO").input_ids != fixres("hello").input_ids
    assert naflex("HELLO").input_ids == naflex("hello").input_ids
    assert naflex("Hello, World!").input_ids != naflex("hello world").input_ids  # punctuation is kept


def test_public_names_resolve_lazily():
    assert siglip.AutoTokenizer is AutoTokenizer
    assert siglip.GemmaTokenizerFast is siglip.GemmaTokenizer is GemmaTokenizer
    assert siglip.Siglip2Tokenizer is Siglip2Tokenizer and siglip.SiglipTokenizer is SiglipTokenizer


# ------------------------------------------------------------------------------------------------------------
# Encoding parity
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FOLDERS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_ids_match_transformers(both, name, options):
    ours, theirs = both(name)
    assert_same_encoding(ours, theirs, options=(options,))


@pytest.mark.parametrize("name", FOLDERS)
@pytest.mark.parametrize("return_tensors", ["pt", "np"])
@pytest.mark.parametrize(
    "options",
    [
        {"padding": "max_length", "truncation": True},
        {"padding": True, "return_attention_mask": True},
        {"padding": "longest", "truncation": True, "max_length": 6, "padding_side": "left"},
    ],
)
def test_tensors_match_transformers(both, name, return_tensors, options):
    ours, theirs = both(name)
    array_type = torch.Tensor if return_tensors == "pt" else np.ndarray
    for texts in (TEXTS, TEXTS[0]):  # a batch, and one string (which gets a batch axis)
        mine = ours(texts, return_tensors=return_tensors, **options)
        ref = theirs(texts, return_tensors=return_tensors, **options)
        assert list(mine) == list(ref)
        for key in ref:
            assert isinstance(mine[key], array_type) and mine[key].dtype == ref[key].dtype, key
            assert mine[key].shape == ref[key].shape and (mine[key] == ref[key]).all(), key


@pytest.mark.parametrize("name", FOLDERS)
def test_unequal_lengths_as_tensors_fail_like_transformers(both, name):
    ours, theirs = both(name)
    with pytest.raises(ValueError):
        theirs(["a", "a much longer text"], return_tensors="pt")
    with pytest.raises(ValueError, match="different lengths.*padding"):
        ours(["a", "a much longer text"], return_tensors="pt")


@pytest.mark.parametrize("name", FOLDERS)
def test_seed_usage_pads_to_64_and_keeps_eos(both, name):
    ours, _ = both(name)
    batch = ours(["a cat", LONG], padding="max_length", truncation=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 64) and "attention_mask" not in batch
    assert batch.input_ids[1, -1].item() == ours.eos_token_id  # truncated text still ends in eos
    assert batch.input_ids[0, -1].item() == ours.pad_token_id


def test_eos_is_not_doubled_by_siglip_but_is_by_gemma(both):
    siglip_tok, gemma = both("siglip")[0], both("siglip2")[0]
    assert siglip_tok.encode("hi</s>") == siglip_tok.encode("hi") == siglip_tok.encode("hi </s>")
    assert gemma.encode("hi<eos>") == gemma.encode("hi") + [gemma.eos_token_id]


@pytest.mark.parametrize("name", FOLDERS)
def test_tokens_vocab_and_special_ids_match_transformers(both, name):
    ours, theirs = both(name)
    assert (ours.vocab_size, len(ours), ours.model_max_length) == (theirs.vocab_size, len(theirs), 64)
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id", "bos_token_id", "pad_token", "eos_token"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.all_special_ids == theirs.all_special_ids
    assert ours.get_vocab() == theirs.get_vocab()
    ids = list(range(len(theirs)))
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        ids, skip_special_tokens=True
    )
    assert ours.convert_ids_to_tokens(5) == theirs.convert_ids_to_tokens(5)
    for text in TEXTS:
        tokens = theirs.tokenize(text)
        assert ours.tokenize(text) == tokens, text
        assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("no-such-token") == theirs.convert_tokens_to_ids("no-such-token")


@pytest.mark.parametrize("name", FOLDERS)
def test_decode_matches_transformers(both, name):
    ours, theirs = both(name)
    batch = theirs(TEXTS, padding=True)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == theirs.batch_decode(
            batch, skip_special_tokens=skip
        )
        for clean_up in (False, True):
            kwargs = {"skip_special_tokens": skip, "clean_up_tokenization_spaces": clean_up}
            assert ours.decode(batch[3], **kwargs) == theirs.decode(batch[3], **kwargs)
    as_tensor = torch.tensor(batch)
    assert ours.decode(as_tensor) == theirs.decode(as_tensor)
    assert ours.batch_decode(as_tensor[0]) == theirs.batch_decode(as_tensor[0])
    assert ours.decode(np.array(batch[0])) == theirs.decode(np.array(batch[0]))
    assert ours.decode(batch[0][0]) == theirs.decode(batch[0][0])
    assert ours.decode([]) == theirs.decode([]) == ""
    assert ours.batch_decode([]) == theirs.batch_decode([]) == []  # transformers 5.24 (5.23 gave [""])


def test_siglip_decode_cleans_up_spaces_like_transformers(both):
    ours, theirs = both("siglip")
    ids = ours.sp_model.encode("a cat , a dog . it 's what ?")
    cleaned, raw = (ours.decode(ids, clean_up_tokenization_spaces=c) for c in (True, False))
    assert cleaned != raw and ours.decode(ids) == cleaned  # the hub config turns clean-up on
    assert (cleaned, raw) == tuple(theirs.decode(ids, clean_up_tokenization_spaces=c) for c in (True, False))


def test_sentencepiece_keeping_whitespace_matches_transformers(folders, tmp_path):
    # A model that keeps whitespace yields a lone "▁" before special tokens, which transformers drops.
    folder = variant(folders, tmp_path, "siglip")
    (folder / "spiece.model").write_bytes(train_sentencepiece(corpus(), remove_extra_whitespaces=False))
    ours, theirs = AutoTokenizer.from_pretrained(folder), hf_load(folder)
    assert_same_encoding(ours, theirs, texts=[*TEXTS, " </s>", "▁</s> x", "\u2581 <unk>"])
    for text in TEXTS:
        assert ours.tokenize(text) == theirs.tokenize(text)


# ------------------------------------------------------------------------------------------------------------
# Config variants (each compared with transformers on the same folder)
# ------------------------------------------------------------------------------------------------------------


def _extra_special(d):
    d["additional_special_tokens"] = ["<ex>", "<ex>tra>", "</s>"]  # overlapping: the longest match wins


def _no_added_tokens(d):
    d["added_tokens"] = []


def _no_post_processor(d):
    d["post_processor"] = None


def _baked_padding(d):
    d["padding"] = {
        "strategy": {"Fixed": 64},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "<pad>",
    }
    d["truncation"] = {"direction": "Left", "max_length": 64, "strategy": "LongestFirst", "stride": 0}


@pytest.mark.parametrize(
    "base, edits, kwargs",
    [
        ("siglip", {"config": _pop("added_tokens_decoder")}, {}),
        ("siglip", {"config": _set("do_lower_case", False)}, {}),
        ("siglip", {"config": _pop("model_input_names")}, {}),
        ("siglip", {"config": _extra_special}, {}),
        ("siglip", {"config": _set("truncation_side", "left")}, {}),
        ("siglip", {}, {"model_max_length": 16, "padding_side": "left"}),
        ("siglip2", {"config": _pop("added_tokens_decoder")}, {}),
        ("siglip2", {"config": _pop("padding_side")}, {}),
        ("siglip2", {"config": _pop("model_max_length")}, {}),
        ("siglip2", {"config": _pop("padding_side"), "tokenizer_json": _baked_padding}, {}),
        ("fixres", {"tokenizer_json": _no_post_processor}, {}),
        ("fixres", {}, {"add_bos_token": True, "add_eos_token": False}),
        ("fixres", {"config": _extra_special}, {}),
        ("fixres", {"config": _pop("added_tokens_decoder"), "tokenizer_json": _no_added_tokens}, {}),
    ],
)
def test_config_variants_match_transformers(folders, tmp_path, base, edits, kwargs):
    folder = variant(folders, tmp_path, base, **edits)
    ours, theirs = AutoTokenizer.from_pretrained(folder, **kwargs), hf_load(folder, **kwargs)
    assert (ours.padding_side, ours.truncation_side, ours.model_max_length) == (
        theirs.padding_side,
        theirs.truncation_side,
        theirs.model_max_length,
    )
    options = (
        {},
        {"padding": "max_length", "truncation": True},
        {"padding": True, "truncation": True, "max_length": 9},
        {"padding": True, "return_attention_mask": True},
    )
    texts = [*TEXTS, "a<ex>tra>b", "<ex><ex>tra>", "<ex>tr"]
    assert_same_encoding(ours, theirs, texts=texts, options=options)
    ids = theirs(texts, padding=True)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)


# ------------------------------------------------------------------------------------------------------------
# Saving and loading
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FOLDERS)
def test_save_pretrained_is_read_back_by_transformers(both, name, tmp_path):
    ours, original = both(name)
    written = {Path(p).name for p in ours.save_pretrained(tmp_path)}
    assert {"tokenizer_config.json", "special_tokens_map.json"} <= written
    assert ("spiece.model" if name == "siglip" else "tokenizer.json") in written
    theirs, reloaded = hf_load(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert type(theirs).__name__ == type(ours).__name__ == type(reloaded).__name__
    options = ({}, {"padding": "max_length", "truncation": True}, {"padding": True, "return_attention_mask": True})
    assert_same_encoding(reloaded, theirs, options=options)
    assert_same_encoding(ours, original, options=options)
    ids = theirs(TEXTS, padding=True)["input_ids"]
    assert reloaded.batch_decode(ids) == theirs.batch_decode(ids) == original.batch_decode(ids)


@pytest.mark.parametrize("name", FOLDERS)
def test_loads_folders_saved_by_transformers(both, name, tmp_path):
    _, theirs = both(name)
    theirs.save_pretrained(tmp_path)  # transformers 5 style: no special_tokens_map.json, config keys it chose
    ours, reread = AutoTokenizer.from_pretrained(tmp_path), hf_load(tmp_path)
    assert type(ours).__name__ == type(reread).__name__
    assert_same_encoding(ours, reread, options=({}, {"padding": "max_length", "truncation": True}))


@pytest.mark.parametrize("name", FOLDERS)
def test_pickle_round_trip(both, name):
    ours, _ = both(name)
    copy = pickle.loads(pickle.dumps(ours))
    assert dict(copy(TEXTS, padding=True)) == dict(ours(TEXTS, padding=True))


def test_class_from_pretrained_and_overrides(folders):
    tok = SiglipTokenizer.from_pretrained(folders["siglip"], model_max_length=16)
    assert tok.model_max_length == 16 and len(tok(LONG, truncation=True).input_ids) == 16
    assert "vocab_size=" in repr(tok)
    with pytest.raises(TypeError, match="not_an_option"):
        SiglipTokenizer.from_pretrained(folders["siglip"], not_an_option=1)
    # A class loaded directly ignores model_type: Siglip2Tokenizer on the FixRes folder lowercases.
    lowercasing = Siglip2Tokenizer.from_pretrained(folders["fixres"])
    assert (
        lowercasing("HI").input_ids
        == lowercasing("hi").input_ids
        == GemmaTokenizer.from_pretrained(folders["fixres"])("hi").input_ids
    )


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------


def _corrupt(path: Path) -> None:
    path.write_bytes(b"not a sentencepiece model")


@pytest.mark.parametrize(
    "base, edits, damage, match",
    [
        ("siglip", {"remove": ["spiece.model"]}, None, "has no spiece.model"),
        ("siglip", {}, "spiece.model", "spiece.model is not a readable SentencePiece model"),
        ("siglip2", {"remove": ["tokenizer.json"]}, None, "has no tokenizer.json"),
        ("siglip2", {}, "tokenizer.json", r"tokenizer.json \(tokenizer.json\) could not be read as JSON"),
        ("siglip", {}, "tokenizer_config.json", r"tokenizer_config.json \(tokenizer config\) could not be read"),
        (
            "fixres",
            {"config": _set("tokenizer_class", "BertTokenizer")},
            None,
            "tokenizer_config.json: tokenizer_class 'BertTokenizer' is not a tokenizer",
        ),
        (
            "siglip",
            {"config": _pop("tokenizer_class"), "model_config": _set("model_type", "clip")},
            None,
            "names no tokenizer_class and config.json model_type is 'clip'",
        ),
        (
            "fixres",
            {"tokenizer_json": lambda d: d["model"].__setitem__("type", "Unigram")},
            None,
            "tokenizer.json key 'model' must be a BPE model",
        ),
    ],
)
def test_broken_folders_give_clear_errors(folders, tmp_path, base, edits, damage, match):
    folder = variant(folders, tmp_path, base, **edits)
    if damage:
        _corrupt(folder / damage)
    with pytest.raises(CheckpointError, match=match):
        AutoTokenizer.from_pretrained(folder)


def test_hub_id_offline_and_not_cached_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        AutoTokenizer.from_pretrained("google/siglip-base-patch16-224", cache_dir=tmp_path, local_files_only=True)


def test_bad_call_arguments(both):
    ours, _ = both("siglip")
    with pytest.raises(ValueError, match="empty list"):
        ours([])
    with pytest.raises(TypeError, match="string or a list of strings"):
        ours([1, 2, 3])
    with pytest.raises(ValueError, match="padding='maxlength'"):
        ours("a", padding="maxlength")
    with pytest.raises(ValueError, match="only_second"):
        ours("a", truncation="only_second")
    with pytest.raises(ValueError, match="not a multiple of pad_to_multiple_of"):
        ours("a", padding=True, truncation=True, max_length=10, pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="padding_side"):
        ours("a", padding=True, padding_side="middle")
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoTokenizer()


def test_too_long_warning_once(folders, caplog):
    ours = SiglipTokenizer.from_pretrained(folders["siglip"])
    with caplog.at_level("WARNING", logger="siglip"):
        ours(LONG)
        ours(LONG)
        ours(LONG, truncation=True)
    assert sum("longer than model_max_length" in r.message for r in caplog.records) == 1


# ------------------------------------------------------------------------------------------------------------
# Properties on arbitrary text
# ------------------------------------------------------------------------------------------------------------

_pieces = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["</s>", "<eos>", "<pad>", "<unk>", "<bos>", " ", "▁", "!?", "HI", "東京", "🙂", "\t\n"]),
)
_texts = st.lists(_pieces, max_size=25).map("".join)


@pytest.mark.parametrize("name", FOLDERS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=_texts, max_length=st.integers(1, 70))
def test_any_text_tokenizes_within_limits_like_transformers(both, name, text, max_length):
    ours, theirs = both(name)
    ids = ours(text, truncation=True, max_length=max_length).input_ids
    assert 1 <= len(ids) <= max_length
    assert all(0 <= i < len(ours) for i in ids)
    assert ids[-1] == ours.eos_token_id
    assert ids == theirs(text, truncation=True, max_length=max_length)["input_ids"]
    padded = ours([text, "x"], padding="max_length", truncation=True, max_length=max_length).input_ids
    assert [len(row) for row in padded] == [max_length, max_length]
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
