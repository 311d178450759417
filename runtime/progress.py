"""A small texts/s progress bar on standard error, for long embedding calls."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """Counts texts as batches finish; removed from the terminal when closed."""

    def __init__(self, total: int, label: str = "embedding") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{speed:,.0f} texts/s")

        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task(label, total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        """Count `n` more texts as done."""
        self._progress.advance(self._task, n)

    def close(self) -> None:
        """Stop and clear the bar."""
        self._progress.stop()
