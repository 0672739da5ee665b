"""Text tokenizers for SigLIP and SigLIP2, giving the ids transformers 5.24's ``AutoTokenizer`` gives.

This module owns:

* ``SiglipTokenizer``: SentencePiece (``spiece.model``) behind big_vision's text canonicalisation (SigLIP v1).
* ``GemmaTokenizer`` and ``Siglip2Tokenizer``: the Gemma BPE ``tokenizer.json`` run through the ``tokenizers``
  library; ``Siglip2Tokenizer`` lowercases first (SigLIP2 NaFlex repos, ``model_type`` "siglip2").
* ``AutoTokenizer``: picks one of them from ``tokenizer_config.json`` and ``config.json`` the way transformers does.
* What they share: padding / truncation / ``return_tensors`` handling, decoding, reading and writing the hub files.

``sentencepiece`` and ``tokenizers`` are imported inside the classes that use them.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import shutil
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .batch_feature import BatchFeature
from .hub import CheckpointError, resolve_folder, split_hub_kwargs

logger = logging.getLogger("siglip")

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
SPIECE_FILE = "spiece.model"
TOKENIZER_FILE = "tokenizer.json"
MODEL_CONFIG_FILE = "config.json"
# Only these are fetched from the hub for a tokenizer (never the weights).
_HUB_PATTERNS = ["*.json", "*.model"]

# transformers' stand-ins for "no limit": model_max_length defaults to the first, and anything above the second
# turns padding="max_length" / truncation without an explicit max_length into no padding / no truncation.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

SPIECE_UNDERLINE = "\u2581"
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)

# A special token as configs give it: its text, or an AddedToken dict ({"content": ..., "lstrip": ..., ...}).
TokenArg = str | dict[str, Any] | None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} ({what}) could not be read as JSON: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} ({what}) must hold a JSON object, got {type(data).__name__}")
    return data


def _token_spec(value: Any, *, special: bool | None = None) -> dict[str, Any] | None:
    """A special/added token from a config value (a string or an AddedToken dict) as a plain dict of its fields."""
    if value is None:
        return None
    if isinstance(value, str):
        spec: dict[str, Any] = {"content": value}
    elif isinstance(value, dict) and isinstance(value.get("content"), str):
        spec = {k: value[k] for k in ("content", *_ADDED_TOKEN_FLAGS) if k in value}
    else:
        raise CheckpointError(f"a special token must be a string or an AddedToken object, got {value!r}")
    if special is not None:
        spec["special"] = special
    return spec


def _content(token: TokenArg) -> str | None:
    return token["content"] if isinstance(token, dict) else token


def _to_python(ids: Any) -> Any:
    """Token ids as Python ints / lists (from tensors, arrays, tuples or lists of those)."""
    if hasattr(ids, "tolist"):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_to_python(i) for i in ids]
    return ids


def _is_id(value: Any, size: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < size


def _check_unicode(text: str, index: int) -> None:
    """A lone surrogate (bytes kept by ``errors="surrogateescape"``) is not Unicode: no tokenizer library takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"text {index} is not valid Unicode: lone surrogate {text[e.start]!r} at position {e.start}; decode "
            "the text with errors='replace' (or fix its encoding) first"
        ) from None


def _clean_up_tokenization(text: str) -> str:
    # transformers' PreTrainedTokenizerBase.clean_up_tokenization: undo the spaces a word-level join puts before
    # punctuation and English contractions.
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


def _special_token(name: str) -> property:
    def get(self: _Tokenizer) -> str | None:
        return _content(self._special_tokens.get(name))

    return property(get, doc=f"The {name.replace('_', ' ')} as a string (None when the tokenizer has none).")


def _special_token_id(name: str) -> property:
    def get(self: _Tokenizer) -> int | None:
        token = _content(self._special_tokens.get(name))
        return None if token is None else self.convert_tokens_to_ids(token)

    return property(get, doc=f"The id of the {name.replace('_', ' ')} (None when the tokenizer has none).")


class _Tokenizer:
    """What every tokenizer here shares: the call options of transformers' ``PreTrainedTokenizerBase``.

    Subclasses provide the vocabulary (``_encode_texts``, ``_decode``, ``convert_*``, ``vocab_size``, ``__len__``)
    and their hub files (``_from_folder``, ``_save_files``).
    """

    padding_side_default = "right"
    model_max_length_default = VERY_LARGE_INTEGER

    bos_token = _special_token("bos_token")
    eos_token = _special_token("eos_token")
    unk_token = _special_token("unk_token")
    sep_token = _special_token("sep_token")
    pad_token = _special_token("pad_token")
    cls_token = _special_token("cls_token")
    mask_token = _special_token("mask_token")
    bos_token_id = _special_token_id("bos_token")
    eos_token_id = _special_token_id("eos_token")
    unk_token_id = _special_token_id("unk_token")
    sep_token_id = _special_token_id("sep_token")
    pad_token_id = _special_token_id("pad_token")
    cls_token_id = _special_token_id("cls_token")
    mask_token_id = _special_token_id("mask_token")

    def _init_common(
        self,
        special_tokens: dict[str, TokenArg],
        extra_special_tokens: Iterable[TokenArg] | None,
        model_max_length: int | None,
        padding_side: str | None,
        truncation_side: str | None,
        model_input_names: Sequence[str] | None,
        clean_up_tokenization_spaces: bool,
        name_or_path: str,
    ) -> None:
        self._special_tokens = {name: _token_spec(special_tokens.get(name)) for name in SPECIAL_TOKEN_NAMES}
        self._extra_special_tokens = [_token_spec(t, special=True) for t in extra_special_tokens or ()]
        self.model_max_length = self.model_max_length_default if model_max_length is None else int(model_max_length)
        self.padding_side = padding_side or self.padding_side_default
        self.truncation_side = truncation_side or "right"
        for what, side in (("padding_side", self.padding_side), ("truncation_side", self.truncation_side)):
            if side not in ("right", "left"):
                raise ValueError(f"{what} must be 'right' or 'left', got {side!r}")
        self.model_input_names = list(model_input_names or ("input_ids", "attention_mask"))
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.name_or_path = name_or_path
        self._warned_too_long = False

    # -- special tokens ----------------------------------------------------------------------------------------

    @property
    def extra_special_tokens(self) -> list[str]:
        return [t["content"] for t in self._extra_special_tokens]

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, e.g. ``{"eos_token": "</s>", ...}``."""
        return {name: _content(v) for name, v in self._special_tokens.items() if v is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        """Named special tokens then extra ones, each once (transformers' order)."""
        tokens = [*self.special_tokens_map.values(), *self.extra_special_tokens]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    # -- encoding ----------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        verbose: bool = True,
    ) -> BatchFeature:
        """Tokenize one string or a batch, like transformers' ``tokenizer(text, ...)``.

        Args:
            text: a string, or a list/tuple of strings (a batch).
            add_special_tokens: append the end-of-sequence token (SigLIP) / apply the post-processor (Gemma).
            padding: False / "do_not_pad", True / "longest" (to the longest in the batch), or "max_length"
                (to ``max_length``, else ``model_max_length``).
            truncation: True / "longest_first" / "only_first" cut each text to ``max_length`` (else
                ``model_max_length``) tokens, special tokens included; the eos survives. Passing only
                ``max_length`` turns truncation on, as in transformers.
            pad_to_multiple_of: round the padded length up to a multiple of this.
            padding_side: "right" or "left"; defaults to the tokenizer's ``padding_side``.
            return_tensors: None (lists), "pt" or "np".
            return_attention_mask: defaults to whether ``"attention_mask"`` is in ``model_input_names`` (the hub
                configs say ``["input_ids"]``, so official SigLIP tokenizers return no mask).
            verbose: warn (once) when a text is longer than ``model_max_length`` and no ``max_length`` applies.

        Returns:
            A ``BatchFeature`` with ``input_ids`` (and ``attention_mask``): a flat list for a single string without
            ``return_tensors``, otherwise one row per text.
        """
        if isinstance(text, str):
            texts, batched = [text], False
        elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            texts, batched = list(text), True
            if not texts:
                raise ValueError("text is an empty list; pass at least one string")
        else:
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        for index, one in enumerate(texts):
            _check_unicode(one, index)
        pad, truncate, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        ids = self._encode_texts(texts, add_special_tokens, max_length if truncate and max_length else None)
        if verbose and max_length is None:
            self._warn_if_too_long(ids)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data = self._pad(ids, pad, max_length, pad_to_multiple_of, padding_side or self.padding_side,
                         return_attention_mask)
        if not batched and return_tensors is None:
            data = {key: rows[0] for key, rows in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def encode(self, text: str | Sequence[str], **kwargs: Any) -> Any:
        """The ``input_ids`` of ``self(text, **kwargs)``: a list of ids for a string."""
        return self(text, **kwargs)["input_ids"]

    def _strategies(
        self, padding: bool | str, truncation: bool | str | None, max_length: int | None, multiple: int | None
    ) -> tuple[str | None, bool, int | None]:
        """(padding "longest" / "max_length" / None, truncate?, max_length), as transformers'
        ``PreTrainedTokenizerBase._get_padding_truncation_strategies`` resolves them."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True  # transformers' backward-compatible rule: max_length alone means truncate to it
        if padding is True or padding == "longest":
            pad = "longest"
        elif padding == "max_length":
            pad = "max_length"
        elif padding is False or padding is None or padding == "do_not_pad":
            pad = None
        else:
            raise ValueError(f"padding={padding!r} is not one of True, False, 'longest', 'max_length', 'do_not_pad'")
        if truncation is True or truncation in ("longest_first", "only_first"):
            truncate = True
        elif truncation is False or truncation is None or truncation == "do_not_truncate":
            truncate = False
        elif truncation == "only_second":
            raise ValueError("truncation='only_second' needs text pairs, which these tokenizers do not take")
        else:
            raise ValueError(
                f"truncation={truncation!r} is not one of True, False, 'longest_first', 'only_first', 'do_not_truncate'"
            )
        if max_length is None:
            unlimited = self.model_max_length > LARGE_INTEGER
            if pad == "max_length":
                pad, max_length = (None, None) if unlimited else (pad, self.model_max_length)
            if truncate and unlimited:
                truncate = False
            elif truncate:
                max_length = self.model_max_length
        if pad is not None and self.pad_token is None:
            raise ValueError("padding was asked for but this tokenizer has no pad_token")
        if truncate and pad is not None and multiple is not None and max_length is not None and max_length % multiple:
            raise ValueError(
                f"truncation and padding are both on, but max_length={max_length} is not a multiple of "
                f"pad_to_multiple_of={multiple}"
            )
        return pad, truncate, max_length

    def _pad(
        self, rows: list[list[int]], pad: str | None, max_length: int | None, multiple: int | None, side: str,
        return_attention_mask: bool,
    ) -> dict[str, list[list[int]]]:
        """Pad rows as transformers' ``PreTrainedTokenizerBase.pad`` does (rows longer than the target stay)."""
        if side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
        target = max(map(len, rows)) if pad == "longest" else max_length if pad == "max_length" else None
        if target is not None and multiple and target % multiple:
            target = (target // multiple + 1) * multiple
        pad_id, ids_out, mask_out = self.pad_token_id, [], []
        for row in rows:
            n = max(0, target - len(row)) if target is not None else 0
            fill, mask = [pad_id] * n, [1] * len(row)
            if side == "right":
                ids_out.append(row + fill)
                mask_out.append(mask + [0] * n)
            else:
                ids_out.append(fill + row)
                mask_out.append([0] * n + mask)
        return {"input_ids": ids_out, "attention_mask": mask_out} if return_attention_mask else {"input_ids": ids_out}

    def _warn_if_too_long(self, rows: list[list[int]]) -> None:
        longest = max(map(len, rows))
        if longest > self.model_max_length and not self._warned_too_long:
            logger.warning(
                "token sequence longer than model_max_length (%d > %d); the text model will reject it. Pass "
                "padding='max_length', truncation=True",
                longest,
                self.model_max_length,
            )
            self._warned_too_long = True

    # -- decoding ----------------------------------------------------------------------------------------------

    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str | list[str]:
        """Ids back to text: a string for one sequence (list, 1-D tensor/array, or one int), a list for a batch."""
        ids = _to_python(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        batch = bool(ids) and isinstance(ids[0], list)
        rows = ids if batch else [ids]
        # The libraries raise IndexError or OverflowError, or return "", for an id they don't know; len(self) is
        # only computed (it can be slow) when an id lies past vocab_size, where added tokens may be.
        if not all(_is_id(i, self.vocab_size) for row in rows for i in row):
            size = len(self)
            bad = [i for row in rows for i in row if not _is_id(i, size)]
            if bad:
                raise ValueError(f"can't decode token ids outside the vocabulary [0, {size}): {bad[:5]}")
        if batch:
            return [self._decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in ids]
        return self._decode(ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """``decode`` that always returns a list of strings (an empty batch gives [], as transformers 5.24)."""
        if _to_python(sequences) == []:
            return []
        out = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)
        return [out] if isinstance(out, str) else out

    # -- loading and saving ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> _Tokenizer:
        """Load from a local folder or a hub id (hub options: revision, cache_dir, local_files_only, token).

        Other keyword arguments override ``tokenizer_config.json`` entries (e.g. ``model_max_length=16``).
        """
        hub_kwargs = split_hub_kwargs(kwargs)
        folder = resolve_folder(name_or_path, patterns=_HUB_PATTERNS, **hub_kwargs)
        return cls._from_folder(folder, str(name_or_path), kwargs)

    @classmethod
    def _from_folder(cls, folder: Path, name_or_path: str, overrides: dict[str, Any]) -> _Tokenizer:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the vocabulary file, ``tokenizer_config.json`` and ``special_tokens_map.json`` (transformers reads
        them back with ``AutoTokenizer.from_pretrained``). Returns the paths written."""
        folder = Path(save_directory)
        if folder.is_file():
            raise CheckpointError(f"{folder} is a file; save_pretrained needs a folder")
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "tokenizer_class": type(self).__name__,
            **self.special_tokens_map,
            "extra_special_tokens": self.extra_special_tokens,
            "added_tokens_decoder": {str(i): spec for i, spec in sorted(self._added_tokens_decoder().items())},
            "model_max_length": self.model_max_length,
            "model_input_names": self.model_input_names,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            **self._extra_config(),
        }
        special_map = {name: self._added_spec(_content(v)) for name, v in self._special_tokens.items() if v}
        if self._extra_special_tokens:
            special_map["additional_special_tokens"] = [self._added_spec(t) for t in self.extra_special_tokens]
        written = [folder / TOKENIZER_CONFIG_FILE, folder / SPECIAL_TOKENS_MAP_FILE]
        for path, data in zip(written, (config, special_map), strict=True):
            path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return tuple(map(str, [*written, *self._save_files(folder)]))

    def _added_spec(self, content: str) -> dict[str, Any]:
        for spec in self._added_tokens_decoder().values():
            if spec["content"] == content:
                return spec
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                "special": True}

    def _added_tokens_decoder(self) -> dict[int, dict[str, Any]]:
        raise NotImplementedError

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _save_files(self, folder: Path) -> list[Path]:
        raise NotImplementedError

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, truncate_to: int | None) -> list[list[int]]:
        raise NotImplementedError

    def _decode(self, ids: list[int], skip_special_tokens: bool, clean_up: bool | None) -> str:
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"special_tokens={self.special_tokens_map})"
        )


def _init_kwargs(folder: Path, overrides: dict[str, Any], *, has_tokenizer_file: bool) -> dict[str, Any]:
    """tokenizer_config.json (+ special_tokens_map.json) merged with the caller's overrides, following
    transformers' ``PreTrainedTokenizerBase._from_pretrained``.

    Returns the config's keys plus ``added_tokens``: ``[(id or None, token spec)]`` in the order to add them.
    """
    config_path = folder / TOKENIZER_CONFIG_FILE
    config = _read_json(config_path, "tokenizer config") if config_path.is_file() else {}
    _check_config_values(config, config_path)
    config.pop("tokenizer_class", None)
    if has_tokenizer_file:
        # transformers ignores the config's add_bos_token / add_eos_token when a tokenizer.json exists: its
        # post-processor decides. Only values the caller passes explicitly rebuild the template.
        config.pop("add_bos_token", None)
        config.pop("add_eos_token", None)
    config.update(overrides)
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    config.pop("additional_special_tokens", None)
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):
        config["extra_special_tokens"] = list(extra.values())

    added: list[tuple[int | None, dict[str, Any]]] = []
    if isinstance(config.get("added_tokens_decoder"), dict):
        for index, value in sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0])):
            added.append((int(index), _token_spec(value)))
        by_content = {spec["content"]: spec for _, spec in added}
        for name in SPECIAL_TOKEN_NAMES:
            if isinstance(config.get(name), (str, dict)):
                config[name] = by_content.get(_content(_token_spec(config[name])), config[name])
    else:
        # Older folders: special tokens (with their strip flags) in special_tokens_map.json, added tokens in
        # tokenizer.json.
        map_path = folder / SPECIAL_TOKENS_MAP_FILE
        special_map = _read_json(map_path, "special tokens map") if map_path.is_file() else {}
        for key, value in special_map.items():
            if overrides.get(key):
                continue
            if key in SPECIAL_TOKEN_NAMES:
                config[key] = _token_spec(value, special=True) if isinstance(value, dict) else value
            elif key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                existing = list(config.get("extra_special_tokens") or [])
                config["extra_special_tokens"] = existing + [v for v in value if v not in existing]
        if has_tokenizer_file:
            data = _read_json(folder / TOKENIZER_FILE, "tokenizer.json")
            for entry in data.get("added_tokens") or []:
                added.append((entry.get("id"), _token_spec(entry)))
    config.pop("added_tokens_decoder", None)
    config["added_tokens"] = added
    return config


def _check_config_values(config: dict[str, Any], path: Path) -> None:
    """Errors naming the file and key for tokenizer_config.json values of the wrong kind."""
    problems = []
    length = config.get("model_max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, float))):
        problems.append(f"'model_max_length' must be a number, got {length!r}")
    for key in ("padding_side", "truncation_side"):
        if config.get(key) not in (None, "left", "right"):
            problems.append(f"{key!r} must be 'left' or 'right', got {config[key]!r}")
    for key in SPECIAL_TOKEN_NAMES:
        value = config.get(key)
        content = value.get("content") if isinstance(value, dict) else value
        if value is not None and not isinstance(content, str):
            problems.append(f"{key!r} must be a string or an AddedToken object, got {value!r}")
    if problems:
        raise CheckpointError(f"{path}: {'; '.join(problems)}")


def _take(config: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: config[name] for name in names if name in config}


_COMMON_OPTIONS = (
    *SPECIAL_TOKEN_NAMES,
    "extra_special_tokens",
    "added_tokens",
    "model_max_length",
    "padding_side",
    "truncation_side",
    "model_input_names",
    "clean_up_tokenization_spaces",
)


def _check_overrides(cls: type, overrides: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(overrides) - set(allowed) - {"additional_special_tokens", "use_fast"})
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword argument(s): {', '.join(unknown)}")


# ----------------------------------------------------------------------------------------------------------------
# SigLIP v1: SentencePiece
# ----------------------------------------------------------------------------------------------------------------


class SiglipTokenizer(_Tokenizer):
    """SigLIP's SentencePiece tokenizer; reproduces transformers' ``models/siglip/tokenization_siglip.py``
    (``SentencePieceBackend`` / ``PythonBackend`` for the shared parts).

    Each text is split on added tokens (``</s>``, ``<unk>``), every other piece is canonicalised as big_vision does
    (lowercase, ASCII punctuation removed, whitespace collapsed, stripped) and encoded by SentencePiece with the
    leading ``"▁"`` kept (the "no dummy prefix" trick), then ``</s>`` is appended unless already last. ``</s>``
    doubles as the pad token.

    Args:
        vocab_file: path of ``spiece.model``.
        eos_token, unk_token, pad_token: special tokens (strings or AddedToken dicts).
        extra_special_tokens: more special tokens (``additional_special_tokens`` in older configs).
        added_tokens: ``[(id, token spec)]`` from ``tokenizer_config.json``'s ``added_tokens_decoder``.
        model_max_length: 64 for SigLIP (16 for so400m-patch14-224).
        do_lower_case: lowercase during canonicalisation.
        sp_model_kwargs: passed to ``sentencepiece.SentencePieceProcessor``.
    """

    model_max_length_default = 64

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        *,
        eos_token: TokenArg = "</s>",
        unk_token: TokenArg = "<unk>",
        pad_token: TokenArg = "</s>",
        bos_token: TokenArg = None,
        extra_special_tokens: Iterable[TokenArg] | None = None,
        added_tokens: Iterable[tuple[int | None, dict[str, Any]]] | None = None,
        model_max_length: int | None = 64,
        do_lower_case: bool = True,
        sp_model_kwargs: dict[str, Any] | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        model_input_names: Sequence[str] | None = None,
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
    ) -> None:
        self.vocab_file = Path(vocab_file)
        self.do_lower_case = bool(do_lower_case)
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.sp_model = self._load_sentencepiece()
        self._init_common(
            {"eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token, "bos_token": bos_token},
            extra_special_tokens, model_max_length, padding_side, truncation_side, model_input_names,
            clean_up_tokenization_spaces, name_or_path,
        )
        # id -> token spec, content -> id: the added tokens that are matched in the raw text before SentencePiece.
        self._added: dict[int, dict[str, Any]] = {}
        for index, spec in added_tokens or ():
            self._added[int(index)] = {"lstrip": False, "rstrip": False, "single_word": False, "normalized": True,
                                       "special": False, **spec}
        self._added_ids = {spec["content"]: i for i, spec in self._added.items()}
        # Special tokens missing from the config's added tokens are added with no strip flags (PythonBackend
        # builds them from plain strings), at their SentencePiece id or appended after the vocabulary.
        for token in self.all_special_tokens:
            if token in self._added_ids:
                continue
            piece_id = self.sp_model.piece_to_id(token)
            index = piece_id if self.sp_model.id_to_piece(piece_id) == token else len(self)
            self._added[index] = {"content": token, "lstrip": False, "rstrip": False, "single_word": False,
                                  "normalized": False, "special": True}
            self._added_ids[token] = index
        contents = sorted(self._added_ids, key=len, reverse=True)  # longest first: leftmost-longest match
        self._added_pattern = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
        self._unk_prefix = self.unk_token or ""
        self._unk_prefix_length = len(self.sp_model.encode(self._unk_prefix, out_type=str))

    def _load_sentencepiece(self) -> Any:
        import sentencepiece as spm

        if not self.vocab_file.is_file():
            raise CheckpointError(f"{self.vocab_file} does not exist; SiglipTokenizer needs the SentencePiece model")
        sp = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        try:
            sp.Load(str(self.vocab_file))
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"{self.vocab_file} is not a readable SentencePiece model: {e}") from None
        return sp

    @classmethod
    def _from_folder(cls, folder: Path, name_or_path: str, overrides: dict[str, Any]) -> SiglipTokenizer:
        extra = ("do_lower_case", "sp_model_kwargs")
        _check_overrides(cls, overrides, (*_COMMON_OPTIONS, *extra))
        config = _init_kwargs(folder, overrides, has_tokenizer_file=False)
        vocab_file = folder / SPIECE_FILE
        if not vocab_file.is_file():
            raise CheckpointError(f"{folder} has no {SPIECE_FILE}; SiglipTokenizer needs the SentencePiece model")
        return cls(vocab_file, name_or_path=name_or_path, **_take(config, (*_COMMON_OPTIONS, *extra)))

    # -- vocabulary --------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of SentencePiece pieces (added tokens not counted)."""
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(getattr(self, "_added_ids", {}))
        return vocab

    def __len__(self) -> int:
        return len(self.get_vocab())

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._added_ids[tokens] if tokens in self._added_ids else self.sp_model.piece_to_id(tokens)
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int):
            return self._added[ids]["content"] if ids in self._added else self.sp_model.id_to_piece(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.convert_ids_to_tokens(int(i)) for i in ids if int(i) not in skip]

    # -- encoding ----------------------------------------------------------------------------------------------

    def canonicalize_text(self, text: str) -> str:
        """big_vision's text canonicalisation: lowercase (if ``do_lower_case``), drop ASCII punctuation, collapse
        whitespace runs to one space, strip."""
        if self.do_lower_case:
            text = text.lower()
        text = text.translate(_PUNCTUATION_TABLE)
        return re.sub(r"\s+", " ", text).strip()

    def tokenize(self, text: str) -> list[str]:
        """Text to SentencePiece pieces and added tokens (no eos)."""
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        # Odd positions hold added tokens. Their lstrip/rstrip flags need no handling: canonicalisation strips the
        # text around them anyway.
        chunks = self._added_pattern.split(text) if self._added_pattern else [text]
        tokens: list[str] = []
        for i, chunk in enumerate(chunks):
            if i % 2:
                tokens.append(chunk)
            elif chunk:
                tokens.extend(self._sentencepiece_pieces(chunk))
        # A lone leading "▁" in front of a special token carries nothing.
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            tokens = tokens[1:]
        return tokens

    def _sentencepiece_pieces(self, text: str) -> list[str]:
        # SentencePiece strips a leading "▁" from its input, so encode "<unk>" + text and drop the pieces of
        # "<unk>": what remains keeps the word-start marker of the first word.
        pieces = self.sp_model.encode(self._unk_prefix + self.canonicalize_text(text), out_type=str)
        n = self._unk_prefix_length
        return pieces[n:] if len(pieces) >= n else pieces

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, truncate_to: int | None) -> list[list[int]]:
        eos = self.eos_token_id
        rows = []
        for text in texts:
            ids = self.convert_tokens_to_ids(self.tokenize(text))
            if truncate_to is not None:
                # Room is kept for the eos; content is cut to truncate_to - 1 tokens, then the eos is appended.
                excess = len(ids) + int(add_special_tokens) - truncate_to
                if excess > 0:
                    ids = ids[:-excess] if self.truncation_side == "right" else ids[excess:]
            if add_special_tokens and eos is not None and not (ids and ids[-1] == eos):
                ids = ids + [eos]
            rows.append(ids)
        return rows

    # -- decoding ----------------------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Pieces back to text; special tokens are written literally, separated by a space from the text before."""
        special = set(self.all_special_tokens)
        out, pending, previous_special = "", [], False
        for token in tokens:
            if token in special:
                if not previous_special:
                    out += " "
                out += self.sp_model.decode(pending) + token
                pending, previous_special = [], True
            else:
                pending.append(token)
                previous_special = False
        return (out + self.sp_model.decode(pending)).strip()

    def _decode(self, ids: list[int], skip_special_tokens: bool, clean_up: bool | None) -> str:
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))
        clean_up = self.clean_up_tokenization_spaces if clean_up is None else clean_up
        return _clean_up_tokenization(text) if clean_up else text

    # -- saving ------------------------------------------------------------------------------------------------

    def _added_tokens_decoder(self) -> dict[int, dict[str, Any]]:
        return self._added

    def _extra_config(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "sp_model_kwargs": self.sp_model_kwargs}

    def _save_files(self, folder: Path) -> list[Path]:
        target = folder / SPIECE_FILE
        if self.vocab_file.resolve() != target.resolve():
            shutil.copyfile(self.vocab_file, target)
        return [target]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["sp_model"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import sentencepiece as spm

        proto = state.pop("sp_model")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.LoadFromSerializedProto(proto)


# ----------------------------------------------------------------------------------------------------------------
# SigLIP2: Gemma BPE through `tokenizers`
# ----------------------------------------------------------------------------------------------------------------


class GemmaTokenizer(_Tokenizer):
    """The Gemma BPE tokenizer as transformers 5.24 builds it (``models/gemma/tokenization_gemma.py`` on
    ``TokenizersBackend``); SigLIP2 FixRes repos (``model_type`` "siglip") load this one, so no lowercasing.

    Like transformers, only the vocabulary, merges and post-processor are taken from ``tokenizer.json``; the
    normalizer (" " -> "▁"), pre-tokenizer and decoder are Gemma's own, and the BPE model always uses byte fallback.
    The post-processor (hub files: ``$A <eos>``) adds the eos; ``add_bos_token`` / ``add_eos_token`` passed here
    replace it. ``<pad>`` (id 0) pads.

    Args:
        tokenizer_file: path of ``tokenizer.json``.
        bos_token, eos_token, unk_token, pad_token, mask_token: special tokens (strings or AddedToken dicts).
        extra_special_tokens: more special tokens.
        added_tokens: ``[(id, token spec)]`` added to the vocabulary in this order.
        add_bos_token, add_eos_token: if either is given, the template becomes ``[<bos>] $A [<eos>]``.
        model_max_length: defaults to "unlimited" (transformers' 1e30).
        padding_side: defaults to the padding baked into ``tokenizer.json``, else "left" (transformers' class
            default; SigLIP2 hub configs say "right").
    """

    padding_side_default = "left"
    _lowercase = False

    def __init__(
        self,
        tokenizer_file: str | os.PathLike,
        *,
        bos_token: TokenArg = "<bos>",
        eos_token: TokenArg = "<eos>",
        unk_token: TokenArg = "<unk>",
        pad_token: TokenArg = None,
        mask_token: TokenArg = "<mask>",
        extra_special_tokens: Iterable[TokenArg] | None = None,
        added_tokens: Iterable[tuple[int | None, dict[str, Any]]] | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        model_max_length: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        model_input_names: Sequence[str] | None = None,
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
    ) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import BPE

        self.tokenizer_file = Path(tokenizer_file)
        if not self.tokenizer_file.is_file():
            raise CheckpointError(f"{self.tokenizer_file} does not exist; {type(self).__name__} needs tokenizer.json")
        data = _read_json(self.tokenizer_file, "tokenizer.json")
        vocab, merges = self._vocab_and_merges(data, self.tokenizer_file)
        baked = self._baked_settings(data, self.tokenizer_file)
        padding, truncation = baked.padding or {}, baked.truncation or {}
        self._init_common(
            {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token,
             "pad_token": pad_token or padding.get("pad_token") or "<pad>", "mask_token": mask_token},
            extra_special_tokens, model_max_length, padding_side or padding.get("direction"),
            truncation_side or truncation.get("direction"), model_input_names, clean_up_tokenization_spaces,
            name_or_path,
        )
        backend = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=self.unk_token, dropout=None,
                                byte_fallback=True))
        backend.normalizer = normalizers.Replace(" ", SPIECE_UNDERLINE)
        backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
        backend.decoder = decoders.Sequence(
            [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
        )
        self._backend = backend

        # Added tokens in config order, then every special token not among them (as transformers'
        # TokenizersBackend.__init__ does); the lowercase normalizer comes after, as in Siglip2Tokenizer.
        to_add, seen = [], set()
        for _, spec in added_tokens or ():
            to_add.append(AddedToken(spec["content"], **{k: spec[k] for k in _ADDED_TOKEN_FLAGS if k in spec}))
            seen.add(spec["content"])
        named = {_content(v) for v in self._special_tokens.values() if v is not None}
        for spec in [*(v for v in self._special_tokens.values() if v is not None), *self._extra_special_tokens]:
            if spec["content"] in seen:
                continue
            flags = {k: spec[k] for k in _ADDED_TOKEN_FLAGS if k in spec}
            if spec["content"] in named or "special" not in flags:
                flags["special"] = True
            to_add.append(AddedToken(spec["content"], **flags))
            seen.add(spec["content"])
        backend.add_tokens(to_add)
        if add_bos_token is not None or add_eos_token is not None or baked.post_processor is None:
            # transformers' TokenizersBackend.update_post_processor; a missing flag counts as False.
            bos = f"{self.bos_token}:0 " if add_bos_token else ""
            eos = f" {self.eos_token}:0" if add_eos_token else ""
            specials = [(t, self.convert_tokens_to_ids(t)) for t, on in ((self.bos_token, add_bos_token),
                                                                          (self.eos_token, add_eos_token)) if on]
            pair = f"{bos}$A:0{eos} {bos.replace(':0', ':1')}$B:1{eos.replace(':0', ':1')}"
            backend.post_processor = processors.TemplateProcessing(single=f"{bos}$A:0{eos}", pair=pair,
                                                                   special_tokens=specials)
        else:
            backend.post_processor = baked.post_processor

        if self._lowercase:
            backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), backend.normalizer])

    @staticmethod
    def _vocab_and_merges(data: dict[str, Any], path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE" or "vocab" not in model:
            kind = model.get("type") if isinstance(model, dict) else None
            raise CheckpointError(
                f"{path} key 'model' must be a BPE model with a vocab (Gemma's), found type {kind!r}"
            )
        vocab = model["vocab"]
        if isinstance(vocab, list):
            vocab = {(t[0] if isinstance(t, list) else t): i for i, t in enumerate(vocab)}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        return vocab, merges

    @staticmethod
    def _baked_settings(data: dict[str, Any], path: Path) -> Any:
        """The post-processor, padding and truncation stored in tokenizer.json, parsed by ``tokenizers`` from a
        copy without the vocabulary (cheap for a 256k vocab)."""
        from tokenizers import Tokenizer

        slim = {**data, "model": {**data["model"], "vocab": {}, "merges": []}, "added_tokens": []}
        try:
            return Tokenizer.from_str(json.dumps(slim))
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON sections
            raise CheckpointError(f"{path} could not be parsed by tokenizers: {e}") from None

    @classmethod
    def _from_folder(cls, folder: Path, name_or_path: str, overrides: dict[str, Any]) -> GemmaTokenizer:
        extra = ("add_bos_token", "add_eos_token")
        _check_overrides(cls, overrides, (*_COMMON_OPTIONS, *extra))
        tokenizer_file = folder / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise CheckpointError(f"{folder} has no {TOKENIZER_FILE}; {cls.__name__} needs the Gemma tokenizer.json")
        config = _init_kwargs(folder, overrides, has_tokenizer_file=True)
        return cls(tokenizer_file, name_or_path=name_or_path, **_take(config, (*_COMMON_OPTIONS, *extra)))

    # -- vocabulary --------------------------------------------------------------------------------------------

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` doing the work."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary (added tokens not counted)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            return self._backend.token_to_id(self.unk_token) if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | None | list[str | None]:
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    # -- encoding ----------------------------------------------------------------------------------------------

    def _set_truncation(self, max_length: int | None) -> None:
        if max_length is None:
            self._backend.no_truncation()
        else:
            self._backend.enable_truncation(max_length, stride=0, strategy="longest_first",
                                            direction=self.truncation_side)

    def tokenize(self, text: str) -> list[str]:
        """Text to BPE tokens (no special tokens added)."""
        self._set_truncation(None)
        return self._backend.encode(text, add_special_tokens=False).tokens

    def _encode_texts(self, texts: list[str], add_special_tokens: bool, truncate_to: int | None) -> list[list[int]]:
        # tokenizers truncates before the post-processor and leaves room for the tokens it adds, so the eos stays.
        self._set_truncation(truncate_to)
        return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=add_special_tokens)]

    # -- decoding ----------------------------------------------------------------------------------------------

    def _decode(self, ids: list[int], skip_special_tokens: bool, clean_up: bool | None) -> str:
        # transformers skips clean_up_tokenization for BPE models (it would delete real spaces), so it is ignored.
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- saving ------------------------------------------------------------------------------------------------

    def _added_tokens_decoder(self) -> dict[int, dict[str, Any]]:
        return {
            index: {"content": t.content, **{flag: getattr(t, flag) for flag in _ADDED_TOKEN_FLAGS}}
            for index, t in self._backend.get_added_tokens_decoder().items()
        }

    def _save_files(self, folder: Path) -> list[Path]:
        self._set_truncation(None)
        target = folder / TOKENIZER_FILE
        self._backend.save(str(target))
        return [target]


GemmaTokenizerFast = GemmaTokenizer


class Siglip2Tokenizer(GemmaTokenizer):
    """Gemma tokenizer that lowercases first; reproduces transformers 5.24's
    ``models/siglip2/tokenization_siglip2.py`` (used for ``model_type`` "siglip2", the NaFlex repos).

    The lowercasing is unconditional, as in transformers 5.24 (``do_lower_case`` in the config is ignored).
    Punctuation is kept, unlike big_vision.
    """

    _lowercase = True


# ----------------------------------------------------------------------------------------------------------------
# AutoTokenizer
# ----------------------------------------------------------------------------------------------------------------

TOKENIZER_CLASSES: dict[str, type[_Tokenizer]] = {
    "SiglipTokenizer": SiglipTokenizer,
    "GemmaTokenizer": GemmaTokenizer,
    "Siglip2Tokenizer": Siglip2Tokenizer,
}
# transformers' TOKENIZER_MAPPING_NAMES for these model types.
_MODEL_TYPE_TOKENIZERS = {"siglip": "SiglipTokenizer", "siglip2": "Siglip2Tokenizer"}
# model types whose hub tokenizer_class transformers overrides (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS).
_HUB_CLASS_OVERRIDDEN = {"siglip2"}


def tokenizer_class_for_folder(folder: Path) -> type[_Tokenizer]:
    """The class transformers 5.24's ``AutoTokenizer`` picks for a SigLIP folder (``models/auto/tokenization_auto.py``).

    * ``model_type`` "siglip2" (NaFlex): always ``Siglip2Tokenizer``, whatever ``tokenizer_class`` says (hub
      files say ``GemmaTokenizer``).
    * otherwise ``tokenizer_config.json``'s ``tokenizer_class`` (then ``config.json``'s), a trailing "Fast"
      ignored: SigLIP2 FixRes repos (``model_type`` "siglip") say ``GemmaTokenizer`` and get it, unlowercased.
    * with no class named, ``model_type`` decides: "siglip" gives ``SiglipTokenizer``.
    """
    config_path, model_config_path = folder / TOKENIZER_CONFIG_FILE, folder / MODEL_CONFIG_FILE
    tokenizer_config = _read_json(config_path, "tokenizer config") if config_path.is_file() else {}
    model_config = _read_json(model_config_path, "model config") if model_config_path.is_file() else {}
    model_type = model_config.get("model_type")
    registered = _MODEL_TYPE_TOKENIZERS.get(model_type)
    if tokenizer_config.get("tokenizer_class"):
        hub_class, source = tokenizer_config["tokenizer_class"], config_path
    else:
        hub_class, source = model_config.get("tokenizer_class"), model_config_path
    if registered and (not hub_class or model_type in _HUB_CLASS_OVERRIDDEN):
        name = registered
    elif hub_class:
        name = hub_class
    else:
        raise CheckpointError(
            f"{folder}: can't tell which tokenizer to build: {TOKENIZER_CONFIG_FILE} names no tokenizer_class and "
            f"{MODEL_CONFIG_FILE} model_type is {model_type!r} (expected 'siglip' or 'siglip2')"
        )
    cls = TOKENIZER_CLASSES.get(name.removesuffix("Fast"))
    if cls is None:
        raise CheckpointError(
            f"{source}: tokenizer_class {name!r} is not a tokenizer this package provides; supported: "
            f"{', '.join(sorted(TOKENIZER_CLASSES))} (and the same names ending in 'Fast')"
        )
    return cls


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(path_or_id)``: the SigLIP / SigLIP2 / Gemma tokenizer a folder declares,
    chosen as transformers 5.24's ``AutoTokenizer`` chooses it (see ``tokenizer_class_for_folder``)."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(path_or_hub_id)")

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> _Tokenizer:
        """Load a tokenizer from a local folder or a hub id.

        Args:
            name_or_path: folder, or hub id such as ``google/siglip-base-patch16-224``.
            **kwargs: hub options (revision, cache_dir, local_files_only, token, force_download, subfolder) and
                overrides of ``tokenizer_config.json`` entries (``model_max_length``, ``padding_side``, ...).
        """
        hub_kwargs = split_hub_kwargs(kwargs)
        folder = resolve_folder(name_or_path, patterns=_HUB_PATTERNS, **hub_kwargs)
        return tokenizer_class_for_folder(folder)._from_folder(folder, str(name_or_path), kwargs)
