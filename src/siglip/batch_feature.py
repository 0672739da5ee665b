"""``BatchFeature``: the dict that tokenizers, image processors and processors return.

Like transformers' ``BatchFeature`` / ``BatchEncoding``: values are reachable as keys or attributes, ``**batch``
unpacks into a model call, and ``.to(device)`` / ``.to(dtype)`` move or cast it (a dtype casts only floating
tensors, so ``input_ids`` stay integer).
"""

from __future__ import annotations

from collections import UserDict
from typing import Any

import numpy as np
import torch

TENSOR_TYPES = (None, "pt", "np")


def as_tensor_type(value: Any, tensor_type: str | None, key: str = "value") -> Any:
    """Convert nested lists / arrays to ``tensor_type`` ("pt", "np" or None to leave as is)."""
    if tensor_type is None:
        return value
    if tensor_type == "pt":
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        try:
            array = np.asarray(value)
        except ValueError:
            raise ValueError(
                f"{key} has rows of different lengths and can't become one tensor; pass padding=True or "
                "padding='max_length' (with truncation=True) to make them equal"
            ) from None
        if array.dtype == object:
            raise ValueError(
                f"{key} has rows of different lengths and can't become one tensor; pass padding=True or "
                "padding='max_length' (with truncation=True) to make them equal"
            )
        return torch.from_numpy(array)
    if tensor_type == "np":
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        try:
            array = np.asarray(value)
        except ValueError:
            array = np.empty(0, dtype=object)
        if array.dtype == object:
            raise ValueError(f"{key} has rows of different lengths and can't become one array; pass padding=True")
        return array
    raise ValueError(f"return_tensors={tensor_type!r} is not supported; use 'pt', 'np' or None")


class BatchFeature(UserDict):
    """A dict of model inputs with attribute access and ``.to()``."""

    def __init__(self, data: dict[str, Any] | None = None, tensor_type: str | None = None):
        super().__init__(data or {})
        self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str) -> Any:
        if name != "data" and "data" in self.__dict__ and name in self.data:
            return self.data[name]
        raise AttributeError(f"BatchFeature has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]

    def convert_to_tensors(self, tensor_type: str | None = None) -> BatchFeature:
        if tensor_type not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={tensor_type!r} is not supported; use 'pt', 'np' or None")
        for key, value in self.data.items():
            self.data[key] = as_tensor_type(value, tensor_type, key)
        return self

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """``.to(device)``, ``.to(dtype)`` or ``.to(device, dtype)``; dtypes apply to floating tensors only."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        non_blocking = kwargs.pop("non_blocking", False)
        if kwargs:
            raise TypeError(f"BatchFeature.to() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif isinstance(arg, (str, torch.device, int)):
                device = arg
            else:
                raise TypeError(f"BatchFeature.to() takes a device or a dtype, got {arg!r}")
        out = {}
        for key, value in self.data.items():
            if isinstance(value, torch.Tensor):
                if dtype is not None and value.is_floating_point():
                    value = value.to(device=device, dtype=dtype, non_blocking=non_blocking)
                elif device is not None:
                    value = value.to(device=device, non_blocking=non_blocking)
            out[key] = value
        self.data = out
        return self
