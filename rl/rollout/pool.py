"""The "ray-vllm" backend: N Ray actors, each owning one vLLM engine, behind the
same interface as a single engine.

- A batch is split into contiguous shares, one per worker; results come back in
  input order. Seeds are per prompt, so a share gives the same samples on any worker.
- ``set_adapter`` validates the directory, stages the new version on every worker
  (bytes through Ray's object store: workers need no shared disk), records it in
  a small store actor, then switches every worker to it. A bad adapter fails in
  the first step, before any worker has swapped.
- A worker that dies is restarted by Ray; on restart it pulls the current
  adapter from the store, and its share of the batch is run again. A worker that
  has not returned its share within ``rollout.generation_timeout_s`` is taken for
  frozen, killed, and handled the same way. More than ``rollout.max_failures``
  failures in one call raise a RuntimeError. ``worker_restarts`` counts them all.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Sequence

from rl.core.config import LoraSettings, RolloutConfig, SamplingConfig
from rl.core.ray_cluster import NAMESPACE, init_ray, read_address_file
from rl.rollout.base import (
    AdapterError, PromptResult, check_adapter, check_sampling, read_adapter_files, request_seeds, tokenize_prompts,
)
from rl.rollout.vllm_engine import VLLMEngine

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 900.0  # a vLLM engine starts in 10-120 s here; beyond this something is wrong


class AdapterStore:
    """Ray actor holding the current adapter (version + file bytes), so a worker
    Ray restarts can fetch it no matter which process noticed the death."""

    def __init__(self):
        self.version: int | None = None
        self.files: dict[str, bytes] | None = None

    def set(self, version: int | None, files: dict[str, bytes] | None) -> None:
        self.version, self.files = version, files

    def get(self) -> tuple[int | None, dict[str, bytes] | None]:
        return self.version, self.files


class RolloutWorker(VLLMEngine):
    """Ray actor body: one vLLM engine in this process (no engine subprocess)."""

    def __init__(self, model_path: str, rollout: RolloutConfig, lora: LoraSettings | None, seed: int,
                 store_name: str | None = None):
        import ray

        super().__init__(model_path, rollout, lora, seed)
        name = ray.get_runtime_context().get_actor_name()  # stable across restarts: reuse and wipe
        self._dir = Path(tempfile.gettempdir()) / f"{name}-adapters" if name else Path(tempfile.mkdtemp())
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir.mkdir(parents=True)
        if store_name is not None:  # after a restart the store holds the current policy
            store = ray.get_actor(store_name, namespace=NAMESPACE)
            version, files = ray.get(store.get.remote())
            if version is not None:
                self.stage(files, version)
                self.activate(version)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "adapter_version": self.adapter_version, "lora_fast_path": self.lora_fast_path}

    def generate_ids(self, prompt_ids, sampling, seeds):
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            return super().generate_ids(prompt_ids, sampling, seeds)
        except EngineDeadError:  # useless from now on: let Ray restart the actor
            log.error("vLLM engine died; exiting so Ray restarts this worker")
            os._exit(1)

    def stage(self, files: dict[str, bytes], version: int) -> None:
        target = self._dir / f"v{version}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
        self.load_adapter(str(target), version)

    def ensure(self, files: dict[str, bytes] | None, version: int | None) -> None:
        """Idempotent: make ``version`` the active adapter."""
        if version != self.adapter_version:
            if version is not None and version not in self._requests:
                self.stage(files, version)
            self.activate(version)

    def discard(self, version: int) -> None:
        super().discard(version)
        if version != self.adapter_version:
            shutil.rmtree(self._dir / f"v{version}", ignore_errors=True)

    def adapter_dirs(self) -> list[str]:
        return sorted(p.name for p in self._dir.iterdir())


def _ray():
    import ray

    return ray


def actor_env(rollout: RolloutConfig) -> dict[str, str]:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine runs inside the actor process
           "VLLM_CPU_KVCACHE_SPACE": str(rollout.cpu_kv_cache_gb),
           "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
    from rl.rollout.vllm_cpu_lora import SWITCH

    if SWITCH in os.environ:
        env[SWITCH] = os.environ[SWITCH]
    if rollout.gpus_per_worker == 0:
        env["OMP_NUM_THREADS"] = str(max(1, int(rollout.cpus_per_worker)))
    return env


class RolloutPool:
    """``rollout.num_workers`` RolloutWorker actors. ``name`` makes them named
    actors other processes can attach to (:meth:`attach`)."""

    def __init__(self, model_path: str, rollout: RolloutConfig, lora: LoraSettings | None = None, seed: int = 0,
                 name: str | None = None):
        from transformers import AutoTokenizer

        ray = _ray()
        self.rollout, self.model_path = rollout, str(model_path)
        self.name = name or f"rollout-{uuid.uuid4().hex[:8]}"
        self.cleanup_files: list[Path] = []  # removed on shutdown (e.g. the cluster address for other ranks)
        self._owns_ray = _init_ray(rollout)
        self._owner = True
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        _check_resources(rollout)
        self._version: int | None = None
        self.worker_restarts = 0  # workers found dead or frozen and restarted, over the pool's life (metrics)
        self.store = ray.remote(AdapterStore).options(
            name=f"{self.name}-store", namespace=NAMESPACE, num_cpus=0).remote()
        worker_cls = ray.remote(RolloutWorker)
        self.workers = [
            worker_cls.options(
                name=f"{self.name}-worker-{i}", namespace=NAMESPACE,
                num_cpus=rollout.cpus_per_worker, num_gpus=rollout.gpus_per_worker,
                max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": actor_env(rollout)},
            ).remote(self.model_path, rollout, lora, seed + i, f"{self.name}-store")
            for i in range(rollout.num_workers)
        ]
        self._wait_ready(range(len(self.workers)))

    @classmethod
    def attach(cls, name: str, model_path: str, rollout: RolloutConfig, timeout_s: float = READY_TIMEOUT_S,
               address_file: Path | None = None):
        """Use a pool another process started (accelerate ranks > 0): same
        workers, no adapter pushes expected from here, nothing killed on shutdown.
        The cluster: ``rollout.ray_address``, $RAY_ADDRESS, the address the creator
        wrote to ``address_file`` (awaited), else Ray's "auto"."""
        from transformers import AutoTokenizer

        ray = _ray()
        self = cls.__new__(cls)
        self.rollout, self.model_path, self.name = rollout, str(model_path), name
        self.cleanup_files = []
        deadline = time.monotonic() + timeout_s
        self._owns_ray = False
        while True:
            try:
                address = rollout.ray_address or os.environ.get("RAY_ADDRESS")
                if address is None and address_file is not None:
                    if not address_file.is_file():
                        raise ConnectionError(f"waiting for the pool creator to write {address_file}")
                    address, _ = read_address_file(address_file)
                self._owns_ray |= _init_ray(rollout, address=address or "auto")
                self.store = ray.get_actor(f"{name}-store", namespace=NAMESPACE)
                self.workers = [ray.get_actor(f"{name}-worker-{i}", namespace=NAMESPACE)
                                for i in range(rollout.num_workers)]
                break
            except (ValueError, ConnectionError) as exc:  # cluster or actors not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rollout pool {name!r} did not appear within {timeout_s:.0f} s: {exc}") from exc
                time.sleep(2.0)
        self._owner = False
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._version = None
        self.worker_restarts = 0
        self._wait_ready(range(len(self.workers)))
        return self

    # --------------------------------------------------------------- generation
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], sampling: SamplingConfig) -> list[PromptResult]:
        ray = _ray()
        check_sampling(sampling)
        ids = tokenize_prompts(self.tokenizer, prompts)
        seeds = request_seeds(sampling.seed, len(ids), sampling.n)
        k = len(self.workers)
        bounds = [len(ids) * i // k for i in range(k + 1)]
        shares = [(w, bounds[w], bounds[w + 1]) for w in range(k) if bounds[w + 1] > bounds[w]]
        pending: dict = {}  # ref -> (share, deadline)

        def submit(w: int, lo: int, hi: int) -> None:
            ref = self.workers[w].generate_ids.remote(ids[lo:hi], sampling, seeds[lo:hi])
            pending[ref] = ((w, lo, hi), time.monotonic() + self.rollout.generation_timeout_s)

        for share in shares:
            submit(*share)
        out: list[PromptResult | None] = [None] * len(ids)
        failures = 0
        while pending:
            wait_s = max(0.0, min(deadline for _, deadline in pending.values()) - time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not done:  # a worker past its deadline is frozen: kill it, Ray restarts it
                for ref in [r for r, (_, deadline) in pending.items() if deadline <= time.monotonic()]:
                    share = pending.pop(ref)[0]
                    ray.kill(self.workers[share[0]], no_restart=False)
                    failures = self._restart(share, failures, (
                        f"did not answer within rollout.generation_timeout_s={self.rollout.generation_timeout_s:g} s "
                        "(frozen?); killed it"))
                    submit(*share)
                continue
            share = pending.pop(done[0])[0]
            try:
                out[share[1]:share[2]] = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                failures = self._restart(share, failures, f"died ({exc})")
                submit(*share)
        return out  # type: ignore[return-value]

    def _restart(self, share: tuple[int, int, int], failures: int, what: str) -> int:
        """One more failure of this generate call: raise past ``rollout.max_failures``
        (the other shares finish and are dropped), else wait for Ray to restart the
        worker so its share can run again. Returns the new failure count."""
        failures += 1
        worker, lo, hi = share
        if failures > self.rollout.max_failures:
            raise RuntimeError(f"rollout pool {self.name}: {failures} worker failures in one generate call "
                               f"(rollout.max_failures={self.rollout.max_failures}); last: worker {worker} {what}")
        log.warning("rollout worker %d %s; retrying its %d prompts on the restarted worker", worker, what, hi - lo)
        self.worker_restarts += 1
        self._wait_ready([worker])
        return failures

    # --------------------------------------------------------------- adapters
    @property
    def adapter_version(self) -> int | None:
        if not self._owner:
            return _ray().get(self.store.get.remote())[0]
        return self._version

    def set_adapter(self, adapter_dir: str, version: int) -> None:
        ray = _ray()
        check_adapter(adapter_dir, self.rollout.max_lora_rank, self.model_path)
        files_ref = ray.put(read_adapter_files(adapter_dir))
        try:
            self._on_all("stage", files_ref, version)
        except ray.exceptions.RayTaskError as exc:  # vLLM refused it: nobody switched
            self._on_all("discard", version)
            raise AdapterError(f"{adapter_dir}: vLLM could not load this adapter: {exc}") from exc
        ray.get(self.store.set.remote(version, files_ref))
        self._version = version
        self._on_all("ensure", files_ref, version)

    def clear_adapter(self) -> None:
        _ray().get(self.store.set.remote(None, None))
        self._version = None
        self._on_all("ensure", None, None)

    def _on_all(self, method: str, *args) -> list:
        """Call ``method`` on every worker; a worker that died is waited for
        (it restarts with the stored adapter) and called again."""
        ray = _ray()
        results, failures = [None] * len(self.workers), 0
        todo = list(range(len(self.workers)))
        while todo:
            refs = [getattr(self.workers[i], method).remote(*args) for i in todo]
            retry = []
            for i, ref in zip(todo, refs):
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    failures += 1
                    if failures > self.rollout.max_failures:
                        raise RuntimeError(f"rollout pool {self.name}: {method} failed {failures} times: {exc}") from exc
                    self.worker_restarts += 1
                    self._wait_ready([i])
                    retry.append(i)
            todo = retry
        return results

    def _wait_ready(self, indices) -> list[dict]:
        """Block until these workers answer. A restarting actor refuses calls
        (ActorUnavailableError) until its engine is up, so poll; a dead one raises."""
        ray = _ray()
        deadline = time.monotonic() + READY_TIMEOUT_S
        infos = []
        for i in indices:
            while True:
                try:
                    infos.append(ray.get(self.workers[i].ready.remote(), timeout=max(1.0, deadline - time.monotonic())))
                    break
                except ray.exceptions.ActorUnavailableError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"rollout worker {i} still restarting after {READY_TIMEOUT_S:.0f} s") from None
                    time.sleep(0.5)
                except ray.exceptions.GetTimeoutError as exc:
                    raise RuntimeError(f"rollout worker {i} not ready after {READY_TIMEOUT_S:.0f} s "
                                       "(too few free CPUs/GPUs in the Ray cluster?)") from exc
                except ray.exceptions.RayActorError as exc:
                    raise RuntimeError(f"rollout worker {i} is dead and was not restarted: {exc}") from exc
        return infos

    def worker_info(self) -> list[dict]:
        """Per worker: pid, adapter version, LoRA ids held, adapter dirs on disk. A worker
        that Ray is restarting is waited for, not reported as an error."""
        ray = _ray()
        info = self._wait_ready(range(len(self.workers)))
        for d, loras, dirs in zip(info, ray.get([w.loaded_adapters.remote() for w in self.workers]),
                                  ray.get([w.adapter_dirs.remote() for w in self.workers])):
            d.update(loaded_adapters=loras, adapter_dirs=dirs)
        return info

    def shutdown(self) -> None:
        ray = _ray()
        for path in getattr(self, "cleanup_files", []):  # even if Ray is already gone
            path.unlink(missing_ok=True)
        if not ray.is_initialized():
            return
        if self._owner:
            for actor in [*getattr(self, "workers", []), getattr(self, "store", None)]:
                if actor is not None:
                    ray.kill(actor, no_restart=True)
        self.workers = []
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def _init_ray(rollout: RolloutConfig, address: str | None = None) -> bool:
    """Join ``address`` / ``rollout.ray_address`` / $RAY_ADDRESS, else start a local cluster
    (rl/core/ray_cluster.py). Returns whether this call initialised Ray (and so must shut it down)."""
    return init_ray(address or rollout.ray_address)


def _check_resources(rollout: RolloutConfig) -> None:
    """Fail now, not after a timeout, when the cluster cannot place the workers."""
    total = _ray().cluster_resources()
    need = {"CPU": rollout.cpus_per_worker * rollout.num_workers, "GPU": rollout.gpus_per_worker * rollout.num_workers}
    for res, amount in need.items():
        if amount > total.get(res, 0):
            raise RuntimeError(f"rollout pool needs {amount:g} {res} ({rollout.num_workers} workers x "
                               f"rollout.{res.lower()}s_per_worker) but the Ray cluster has {total.get(res, 0):g}")
