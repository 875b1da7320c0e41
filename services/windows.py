"""What the text services share: a model that takes windows of token ids and an attention mask, (N, 2, L) int64,
from a store entry holding the tokenizer's files and ``model.onnx``; the windows of concurrent requests, padded to
the longest, make one model call."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from services.batching import concat_windows
from services.pipeline import TaskService
from tasks.spec import resolve


class WindowService(TaskService):
    """A :class:`TaskService` over token windows; ``runner_class`` names the ONNX runner (``module:Class``)."""

    runner_class: ClassVar[str]

    def load_model(self, entry) -> None:
        from transformers import AutoTokenizer

        from tasks.store import verified_file

        paths = {name: verified_file(entry, name) for name in entry.info.metadata["files"]}  # tokenizer's too
        self.tokenizer = AutoTokenizer.from_pretrained(str(entry.path))
        self.runner = resolve(self.runner_class)(paths["model.onnx"], self.args.device, self.threads)
        self.backend_name = f"{self.runner.name}/{self.runner.device}"

    def batch_functions(self) -> dict[str, Any]:
        return {"collate": self.collate}

    def collate(self, payloads: list[np.ndarray]) -> np.ndarray:
        """Jobs of (k, 2, L) windows, L differing by length bucket -> (N, 2, max L): one model call."""
        return concat_windows(payloads, self.tokenizer.pad_token_id)

    def warm_up(self) -> None:
        self.run(np.ones((1, 2, 32), np.int64))
