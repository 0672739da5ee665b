"""What the tokenizers share: transformers' ``PreTrainedTokenizerBase`` call options (padding, truncation,
``return_tensors``, attention masks), decoding, special tokens, and reading and writing ``tokenizer_config.json``
/ ``special_tokens_map.json`` as transformers 5.24 does. The two vocabularies live in ``tokenization.py``.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .batch_feature import BatchFeature
from .files import (
    PREPROCESSING_PATTERNS,
    SPECIAL_TOKENS_MAP_NAME,
    TOKENIZER_CONFIG_NAME,
    TOKENIZER_NAME,
    Checkpoint,
    CheckpointError,
    atomic_write_json,
    split_hub_kwargs,
)

logger = logging.getLogger("siglip")

# transformers' stand-ins for "no limit": model_max_length defaults to the first, and anything above the second
# turns padding="max_length" / truncation without an explicit max_length into no padding / no truncation.
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

SPIECE_UNDERLINE = "\u2581"
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")

# A special token as configs give it: its text, or an AddedToken dict ({"content": ..., "lstrip": ..., ...}).
TokenArg = str | dict[str, Any] | None


def _token_spec(value: Any, *, special: bool | None = None) -> dict[str, Any] | None:
    """A special/added token from a config value (a string or an AddedToken dict) as a plain dict of its fields."""
    if value is None:
        return None
    if isinstance(value, str):
        spec: dict[str, Any] = {"content": value}
    elif isinstance(value, dict) and isinstance(value.get("content"), str):
        spec = {k: value[k] for k in ("content", *ADDED_TOKEN_FLAGS) if k in value}
    else:
        raise CheckpointError(f"a special token must be a string or an AddedToken object, got {value!r}")
    if special is not None:
        spec["special"] = special
    return spec


def token_content(token: TokenArg) -> str | None:
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


def clean_up_tokenization(text: str) -> str:
    # transformers' PreTrainedTokenizerBase.clean_up_tokenization: undo the spaces a word-level join puts before
    # punctuation and English contractions.
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text


def _special_token(name: str) -> property:
    def get(self: _Tokenizer) -> str | None:
        return token_content(self._special_tokens.get(name))

    return property(get, doc=f"The {name.replace('_', ' ')} as a string (None when the tokenizer has none).")


def _special_token_id(name: str) -> property:
    def get(self: _Tokenizer) -> int | None:
        token = token_content(self._special_tokens.get(name))
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
        return {name: token_content(v) for name, v in self._special_tokens.items() if v is not None}

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
        data = self._pad(
            ids, pad, max_length, pad_to_multiple_of, padding_side or self.padding_side, return_attention_mask
        )
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
        self,
        rows: list[list[int]],
        pad: str | None,
        max_length: int | None,
        multiple: int | None,
        side: str,
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
    def from_pretrained(cls, name_or_path: str | os.PathLike | Checkpoint, **kwargs: Any) -> _Tokenizer:
        """Load from a local folder or a hub id (hub options: revision, cache_dir, local_files_only, token).

        Other keyword arguments override ``tokenizer_config.json`` entries (e.g. ``model_max_length=16``).
        """
        checkpoint = Checkpoint.resolve(name_or_path, patterns=PREPROCESSING_PATTERNS, **split_hub_kwargs(kwargs))
        return cls.from_checkpoint(checkpoint, kwargs)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, overrides: dict[str, Any]) -> _Tokenizer:
        """Build from a resolved checkpoint's files, ``overrides`` replacing ``tokenizer_config.json`` entries."""
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
        special_map = {name: self._added_spec(token_content(v)) for name, v in self._special_tokens.items() if v}
        if self._extra_special_tokens:
            special_map["additional_special_tokens"] = [self._added_spec(t) for t in self.extra_special_tokens]
        written = [atomic_write_json(folder / TOKENIZER_CONFIG_NAME, config)]
        written.append(atomic_write_json(folder / SPECIAL_TOKENS_MAP_NAME, special_map))
        return tuple(map(str, [*written, *self._save_files(folder)]))

    def _added_spec(self, content: str) -> dict[str, Any]:
        for spec in self._added_tokens_decoder().values():
            if spec["content"] == content:
                return spec
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }

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


def init_kwargs(checkpoint: Checkpoint, overrides: dict[str, Any], *, has_tokenizer_file: bool) -> dict[str, Any]:
    """tokenizer_config.json (+ special_tokens_map.json) merged with the caller's overrides, following
    transformers' ``PreTrainedTokenizerBase._from_pretrained``.

    Returns the config's keys plus ``added_tokens``: ``[(id or None, token spec)]`` in the order to add them.
    """
    config = dict(checkpoint.json(TOKENIZER_CONFIG_NAME, "tokenizer config") or {})
    _check_config_values(config, checkpoint.path(TOKENIZER_CONFIG_NAME))
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
                config[name] = by_content.get(token_content(_token_spec(config[name])), config[name])
    else:
        # Older folders: special tokens (with their strip flags) in special_tokens_map.json, added tokens in
        # tokenizer.json.
        special_map = checkpoint.json(SPECIAL_TOKENS_MAP_NAME, "special tokens map") or {}
        for key, value in special_map.items():
            if overrides.get(key):
                continue
            if key in SPECIAL_TOKEN_NAMES:
                config[key] = _token_spec(value, special=True) if isinstance(value, dict) else value
            elif key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                existing = list(config.get("extra_special_tokens") or [])
                config["extra_special_tokens"] = existing + [v for v in value if v not in existing]
        if has_tokenizer_file:
            data = checkpoint.json(TOKENIZER_NAME, "tokenizer.json") or {}
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


def take(config: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: config[name] for name in names if name in config}


COMMON_OPTIONS = (
    *SPECIAL_TOKEN_NAMES,
    "extra_special_tokens",
    "added_tokens",
    "model_max_length",
    "padding_side",
    "truncation_side",
    "model_input_names",
    "clean_up_tokenization_spaces",
)


def check_overrides(cls: type, overrides: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(overrides) - set(allowed) - {"additional_special_tokens", "use_fast"})
    if unknown:
        raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword argument(s): {', '.join(unknown)}")
