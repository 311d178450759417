"""The one small interface every inference engine sits behind: run a graph, get the named outputs.

`Model`, the parity gate and the INT8 search call `runner.run(output_names, feeds)` and never ask
which engine runs it. onnxruntime is the core; OpenVINO is an optional extra (`bertx[openvino]`),
imported only when a graph is opened with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .runner import Backend, GraphFile, InferencePrecision, Runner, RunOptions
from .session import PROVIDERS, Device, create_session

__all__ = ["Backend", "GraphFile", "InferencePrecision", "OnnxRuntimeRunner", "RunOptions", "Runner", "open_graph"]


class OnnxRuntimeRunner:
    """An onnxruntime session; on a GPU the inputs and only the requested outputs go through I/O binding,
    so each batch crosses to the device once and unused hidden states never come back to the host."""

    def __init__(self, path: Path, options: RunOptions) -> None:
        tensorrt = options.tensorrt if options.device is Device.TENSORRT else None
        self.session = create_session(
            path, options.device, options.threads, options.allow_fallback, tensorrt, options.cpu_arena
        )
        active = self.session.get_providers()[0]
        self.device = next((d for d, name in PROVIDERS.items() if name == active), Device.CPU)
        self._bind = self.device is not Device.CPU

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.session.get_inputs())

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self._bind:
            return list(self.session.run(outputs, feeds))
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())


def open_graph(graph: GraphFile | Path, options: RunOptions | None = None) -> Runner:
    """Open a graph file with the engine it is made for.

    Raises:
        MissingDependencyError: an OpenVINO graph and no openvino installed (the message names the extra).
        ArtifactError, ProviderError, OptionError: as the engine reports them, in one sentence.
    """
    graph = graph if isinstance(graph, GraphFile) else GraphFile(graph)
    options = options or RunOptions()
    if graph.backend is Backend.OPENVINO:
        from .openvino_backend import OpenVINORunner

        return OpenVINORunner(graph.path, graph.precision or InferencePrecision.F32, options)
    return OnnxRuntimeRunner(graph.path, options)
