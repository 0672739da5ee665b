"""The SigLIP and SigLIP2 tokenizers, giving the ids transformers 5.24's tokenizer classes give.

* ``SiglipTokenizer``: SentencePiece (``spiece.model``) behind big_vision's text canonicalisation (SigLIP v1).
* ``GemmaTokenizer`` and ``Siglip2Tokenizer``: the Gemma BPE ``tokenizer.json`` run through the ``tokenizers``
  library; ``Siglip2Tokenizer`` lowercases first (SigLIP2 NaFlex repos, ``model_type`` "siglip2").

What they share (padding, truncation, decoding, config files) is in ``tokenization_utils.py``; which one a folder
gets is decided in ``auto.py``. ``sentencepiece`` and ``tokenizers`` are imported inside the classes that use them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .files import SPIECE_NAME, TOKENIZER_NAME, Checkpoint, CheckpointError, read_json_object
from .tokenization_utils import (
    ADDED_TOKEN_FLAGS,
    COMMON_OPTIONS,
    SPIECE_UNDERLINE,
    TokenArg,
    _Tokenizer,
    check_overrides,
    clean_up_tokenization,
    init_kwargs,
    take,
    token_content,
)

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)

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
            extra_special_tokens,
            model_max_length,
            padding_side,
            truncation_side,
            model_input_names,
            clean_up_tokenization_spaces,
            name_or_path,
        )
        # id -> token spec, content -> id: the added tokens that are matched in the raw text before SentencePiece.
        self._added: dict[int, dict[str, Any]] = {}
        for index, spec in added_tokens or ():
            self._added[int(index)] = {
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
                "normalized": True,
                "special": False,
                **spec,
            }
        self._added_ids = {spec["content"]: i for i, spec in self._added.items()}
        # Special tokens missing from the config's added tokens are added with no strip flags (PythonBackend
        # builds them from plain strings), at their SentencePiece id or appended after the vocabulary.
        for token in self.all_special_tokens:
            if token in self._added_ids:
                continue
            piece_id = self.sp_model.piece_to_id(token)
            index = piece_id if self.sp_model.id_to_piece(piece_id) == token else len(self)
            self._added[index] = {
                "content": token,
                "lstrip": False,
                "rstrip": False,
                "single_word": False,
                "normalized": False,
                "special": True,
            }
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
    def from_checkpoint(cls, checkpoint: Checkpoint, overrides: dict[str, Any]) -> SiglipTokenizer:
        extra = ("do_lower_case", "sp_model_kwargs")
        check_overrides(cls, overrides, (*COMMON_OPTIONS, *extra))
        config = init_kwargs(checkpoint, overrides, has_tokenizer_file=False)
        vocab_file = checkpoint.path(SPIECE_NAME)
        if not vocab_file.is_file():
            raise CheckpointError(
                f"{checkpoint.folder} has no {SPIECE_NAME}; SiglipTokenizer needs the SentencePiece model"
            )
        return cls(vocab_file, name_or_path=checkpoint.name, **take(config, (*COMMON_OPTIONS, *extra)))

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
        return clean_up_tokenization(text) if clean_up else text

    # -- saving ------------------------------------------------------------------------------------------------

    def _added_tokens_decoder(self) -> dict[int, dict[str, Any]]:
        return self._added

    def _extra_config(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "sp_model_kwargs": self.sp_model_kwargs}

    def _save_files(self, folder: Path) -> list[Path]:
        target = folder / SPIECE_NAME
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
        tokenizer_json: dict[str, Any] | None = None,
    ) -> None:
        from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import BPE

        self.tokenizer_file = Path(tokenizer_file)
        if tokenizer_json is None and not self.tokenizer_file.is_file():
            raise CheckpointError(f"{self.tokenizer_file} does not exist; {type(self).__name__} needs tokenizer.json")
        # tokenizer_json: the file already parsed (by from_checkpoint), so it is read once
        data = tokenizer_json if tokenizer_json is not None else read_json_object(self.tokenizer_file, "tokenizer.json")
        vocab, merges = self._vocab_and_merges(data, self.tokenizer_file)
        baked = self._baked_settings(data, self.tokenizer_file)
        padding, truncation = baked.padding or {}, baked.truncation or {}
        self._init_common(
            {
                "bos_token": bos_token,
                "eos_token": eos_token,
                "unk_token": unk_token,
                "pad_token": pad_token or padding.get("pad_token") or "<pad>",
                "mask_token": mask_token,
            },
            extra_special_tokens,
            model_max_length,
            padding_side or padding.get("direction"),
            truncation_side or truncation.get("direction"),
            model_input_names,
            clean_up_tokenization_spaces,
            name_or_path,
        )
        backend = Tokenizer(
            BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=self.unk_token, dropout=None, byte_fallback=True)
        )
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
            to_add.append(AddedToken(spec["content"], **{k: spec[k] for k in ADDED_TOKEN_FLAGS if k in spec}))
            seen.add(spec["content"])
        named = {token_content(v) for v in self._special_tokens.values() if v is not None}
        for spec in [*(v for v in self._special_tokens.values() if v is not None), *self._extra_special_tokens]:
            if spec["content"] in seen:
                continue
            flags = {k: spec[k] for k in ADDED_TOKEN_FLAGS if k in spec}
            if spec["content"] in named or "special" not in flags:
                flags["special"] = True
            to_add.append(AddedToken(spec["content"], **flags))
            seen.add(spec["content"])
        backend.add_tokens(to_add)
        if add_bos_token is not None or add_eos_token is not None or baked.post_processor is None:
            # transformers' TokenizersBackend.update_post_processor; a missing flag counts as False.
            bos = f"{self.bos_token}:0 " if add_bos_token else ""
            eos = f" {self.eos_token}:0" if add_eos_token else ""
            specials = [
                (t, self.convert_tokens_to_ids(t))
                for t, on in ((self.bos_token, add_bos_token), (self.eos_token, add_eos_token))
                if on
            ]
            pair = f"{bos}$A:0{eos} {bos.replace(':0', ':1')}$B:1{eos.replace(':0', ':1')}"
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos}$A:0{eos}", pair=pair, special_tokens=specials
            )
        else:
            backend.post_processor = baked.post_processor

        if self._lowercase:
            backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), backend.normalizer])

    @staticmethod
    def _vocab_and_merges(data: dict[str, Any], path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
        model = data.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE" or "vocab" not in model:
            kind = model.get("type") if isinstance(model, dict) else None
            raise CheckpointError(f"{path} key 'model' must be a BPE model with a vocab (Gemma's), found type {kind!r}")
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
    def from_checkpoint(cls, checkpoint: Checkpoint, overrides: dict[str, Any]) -> GemmaTokenizer:
        extra = ("add_bos_token", "add_eos_token")
        check_overrides(cls, overrides, (*COMMON_OPTIONS, *extra))
        data = checkpoint.json(TOKENIZER_NAME, "tokenizer.json")
        if data is None:
            raise CheckpointError(
                f"{checkpoint.folder} has no {TOKENIZER_NAME}; {cls.__name__} needs the Gemma tokenizer.json"
            )
        config = init_kwargs(checkpoint, overrides, has_tokenizer_file=True)
        options = take(config, (*COMMON_OPTIONS, *extra))
        return cls(checkpoint.path(TOKENIZER_NAME), name_or_path=checkpoint.name, tokenizer_json=data, **options)

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
            self._backend.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )

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
            index: {"content": t.content, **{flag: getattr(t, flag) for flag in ADDED_TOKEN_FLAGS}}
            for index, t in self._backend.get_added_tokens_decoder().items()
        }

    def _save_files(self, folder: Path) -> list[Path]:
        self._set_truncation(None)
        target = folder / TOKENIZER_NAME
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
