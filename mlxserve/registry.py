"""The resident models: which engine serves a request, loading and unloading between generations.

One engine (one MLX thread) per resident model. A request for another available
model starts loading it (``503 model_loading`` until it is ready) while the
resident ones keep serving; when ``--max-loaded-models`` or the memory budget
would be exceeded, the least recently used model is unloaded first, but only
once its generations have finished: a switch never cuts a generation short.
"""

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Callable, Optional

from mlxserve.config import Settings
from mlxserve.engine import Engine, resolve_model_path
from mlxserve.errors import ModelLoadingError, NotFoundError
from mlxserve.models import ModelInfo, available_models, describe, find_model

log = logging.getLogger("mlxserve.registry")

LOADING_RETRY_AFTER = 5.0
GIB = 1024**3
MISS_TTL = 10.0  # seconds a name that resolved to nothing is not looked up again
MAX_MISSES = 1024


class ModelRegistry:
    """Resident engines by model id, most recently used last.

    Args:
        settings: ``model`` is loaded at start; ``max_loaded_models``,
            ``max_models_memory`` and ``model_policy`` govern the rest.
        engine: An already created engine for ``settings.model`` (tests share one);
            the registry never stops an engine it did not create.
        make_engine: Creates an engine for a model path.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Optional[Engine] = None,
        make_engine: Callable[[str], Engine] = Engine,
    ):
        self.settings = settings
        self.default = settings.model_name
        self.make_engine = make_engine
        first = engine or make_engine(settings.model)
        self._borrowed = {id(first)} if engine is not None else set()
        self.engines: "OrderedDict[str, Engine]" = OrderedDict({self.default: first})
        self.sizes: dict[str, int] = {}
        self.refs: dict[str, str] = {self.default: settings.model}
        """Every model ever resident: id -> what to load it from, to reload it."""
        self.active: Counter = Counter()
        self.pending: "OrderedDict[str, ModelInfo]" = OrderedDict()
        """Models waiting for a resident one to finish its generations."""
        self._misses: dict[str, float] = {}

    # ---- lifecycle ----

    def start(self) -> None:
        for engine in self.engines.values():
            engine.start()

    def stop(self) -> None:
        for engine in self.engines.values():
            self._stop(engine)

    def _stop(self, engine: Engine, wait: bool = True) -> None:
        """Stop ``engine`` unless it was lent; ``wait=False`` returns at once (the
        thread of an idle engine exits by itself within moments)."""
        if id(engine) not in self._borrowed:
            engine.stop(timeout=10.0 if wait else 0)

    # ---- resolution ----

    async def resolve(self, name: Optional[str]) -> tuple[str, Engine]:
        """The model id and engine for a request's ``model``.

        Raises:
            ModelLoadingError: The model is loading, or waits for a slot to load in.
            NotFoundError: ``model_policy`` is ``strict`` and nothing has that name.
        """
        name = name or self.default
        for model_id, engine in self.engines.items():
            if name in (model_id, engine.model_ref):
                self.engines.move_to_end(model_id)
                return model_id, engine
        # Disk work (aliases file, cache scan) off the event loop; state stays on it.
        # Clients often send names that mean nothing here ("gpt-4o"): remember misses briefly.
        now = time.monotonic()
        info = None
        if self._misses.get(name, 0) < now:
            info = await asyncio.to_thread(self._lookup, name)
            if info is None:
                self._misses[name] = now + MISS_TTL
                if len(self._misses) > MAX_MISSES:
                    self._misses.clear()
        if info is None:
            if self.settings.model_policy == "strict":
                names = await asyncio.to_thread(self.names)
                raise NotFoundError(
                    f"The model '{name}' does not exist. Available models: {', '.join(names)}.",
                    param="model",
                    code="model_not_found",
                )
            if self.engines:  # a single-model server answers any name
                model_id = next(reversed(self.engines))
                return model_id, self.engines[model_id]
            info = await asyncio.to_thread(self._lookup, self.default)
        if info.id not in self.engines:
            self.pending[info.id] = info
            self.make_room()
        if info.id in self.engines:
            return info.id, self.engines[info.id]
        raise ModelLoadingError(
            f"The model {info.id} will load once the running generations finish. Try again shortly.",
            retry_after=LOADING_RETRY_AFTER,
        )

    def listing(self) -> list[tuple[ModelInfo, bool]]:
        """Resident models first (most recently used last), then every other available one,
        each with whether it is loaded (blocking: scans the disk)."""
        out, seen = [], set()
        for model_id, engine in list(self.engines.items()):
            path = engine.model_path
            info = describe(model_id, path, "loaded") if path else ModelInfo(model_id, None, "loaded")
            out.append((info, True))
            seen.update({model_id, engine.model_ref, str(path)})
        for info in available_models():
            if info.id not in seen and str(info.path) not in seen:
                out.append((info, False))
        return out

    def names(self) -> list[str]:
        """Every model id a request may use."""
        return sorted({*self.engines, *self.refs, *(m.id for m in available_models())})

    def _lookup(self, name: str) -> Optional[ModelInfo]:
        if name in self.refs:  # resident before, unloaded since
            return describe(name, resolve_model_path(self.refs[name]), "loaded")
        return find_model(name)

    # ---- loading and unloading ----

    def began(self, model_id: str) -> None:
        self.active[model_id] += 1

    def ended(self, model_id: str) -> None:
        self.active[model_id] -= 1
        if self.pending and not self.active[model_id]:
            self.make_room()

    def make_room(self) -> None:
        """Start pending loads, unloading idle least-recently-used models as needed."""
        while self.pending:
            model_id, info = next(iter(self.pending.items()))
            while self._over_budget(info):
                victim = next((m for m in self.engines if self._evictable(m)), None)
                if victim is None:
                    return  # every resident model is generating or loading: wait
                # Not joined: this runs on the event loop, and an idle engine's
                # thread lets its memory go as soon as it sees the stop.
                self._stop(self.unload(victim), wait=False)
            del self.pending[model_id]
            log.info("loading %s from %s", model_id, info.path)
            engine = self.make_engine(str(info.path))
            self.engines[model_id] = engine
            self.sizes[model_id] = info.size_bytes
            self.refs[model_id] = str(info.path)
            engine.start()

    def _evictable(self, model_id: str) -> bool:
        """Idle and not loading: a model still loading is never cut off (two
        clients asking for two models in turn would otherwise keep each other
        from ever loading)."""
        return not self.active[model_id] and self.engines[model_id].state != "loading"

    def _over_budget(self, incoming: ModelInfo) -> bool:
        if not self.engines:
            return False
        if len(self.engines) + 1 > self.settings.max_loaded_models:
            return True
        budget = self.settings.max_models_memory
        if budget is None:
            return False
        used = sum(self._size(m) for m in self.engines) + incoming.size_bytes
        return used > budget * GIB

    def _size(self, model_id: str) -> int:
        """Bytes on disk of a resident model: known from its listing, or (for
        the model the server started with) counted once its path is known."""
        if model_id not in self.sizes:
            path = self.engines[model_id].model_path
            if path is None:  # not resolved yet
                return 0
            self.sizes[model_id] = describe(model_id, path, "loaded").size_bytes
        return self.sizes[model_id]

    def unload(self, model_id: str) -> Engine:
        """Take ``model_id`` out of the resident set; stop the engine it returns (when idle)."""
        self.sizes.pop(model_id, None)
        log.info("unloading %s", model_id)
        return self.engines.pop(model_id)

    async def unload_when_idle(self, model_id: str, timeout: float) -> None:
        """Unload ``model_id`` once its generations end (at most ``timeout`` seconds).

        Raises:
            NotFoundError: ``model_id`` is not resident.
        """
        if model_id not in self.engines:
            raise NotFoundError(
                f"The model '{model_id}' is not loaded.", param="model", code="model_not_found"
            )
        deadline = asyncio.get_running_loop().time() + timeout
        while self.active[model_id] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if model_id in self.engines:
            await asyncio.to_thread(self._stop, self.unload(model_id))
