"""NDIF model actor for a machine without a GPU (loaded by Ray workers of the local stack, not by mapflow).

Selected with NDIF's own setting ``NDIF_DEFAULT_MODEL_ACTOR_CLASS=mapflow_cpu_actor.CPUModelActor``, this directory on
``PYTHONPATH`` before ``ray start``. The stock actor calls ``torch.cuda`` while loading, caching and cleaning up; this
one overrides only those four steps, so NDIF's request path (queue, deserialise, interleave, save, upload) is its own.

Every request runs under `mapflow_guard`: restricted (no files, processes, threads, network or native code) and
with the weights checked after it (a request that changed one fails and the checkpoint is reloaded before the next
request runs). ``MAPFLOW_NDIF_WEIGHT_CHECK=off`` in the stack's environment turns the check off (docs/security.md: its cost).

A checkpoint whose processor needs torchvision (LLaVA-NeXT-Video's video processor; there is no CPU torchvision wheel
for the server's torch) gets its tokenizer in the processor's place: the server only runs traces on tensors the client
prepared, so it never preprocesses anything.
"""

import gc
import json
import logging
import os
import time

import ray
from mapflow_guard import CodeGuard, WeightsGuard, install, restricted
from ndif.services.ray.deployments.modeling.base import (
    KILL_REASON_PREEMPTED,
    BaseModelDeployment,
    HuggingFaceModel,
)

install()  # the audit hook, before any request

logger = logging.getLogger("ndif")


class ModelChanged(RuntimeError):
    """A request changed the deployed weights or replaced the model's code (put back before serving again)."""


class CPUModelDeployment(BaseModelDeployment):
    def load_from_disk(self):
        try:
            model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, **self.kwargs)
        except ImportError as err:
            from transformers import AutoTokenizer

            repo_id = json.loads(self.model_key.split(":", 1)[1])["repo_id"]
            logger.warning(f"{self.model_key}: processor unavailable ({err}); serving with its tokenizer only")
            model = HuggingFaceModel.from_model_key(
                self.model_key,
                dispatch=True,
                dtype=self.dtype_name,
                processor=AutoTokenizer.from_pretrained(repo_id),
                **self.kwargs,
            )
        model._module.requires_grad_(False)
        if not hasattr(self, "weights_guard"):  # the first load's digests stay the reference for every reload
            self.weights_guard = WeightsGuard(model._module) if _weight_check_on() else None
            self.code_guard = CodeGuard(model._module)
        logger.info(f"Loaded {self.model_key} on CPU")
        return model

    def execute(self, request):
        """NDIF's request body (deserialise, run the block, save), restricted, and the weights checked after it."""
        if not getattr(self, "checked_after_last_request", True):  # one that timed out may still run, unchecked
            self._reload_if_changed("an earlier request")
        self.checked_after_last_request = False
        try:
            with restricted():
                return super().execute(request)
        finally:
            patched = self.code_guard.restore_changed()  # put back first: the reload below runs the model's code
            changed = self._reload_if_changed("this request")
            self.checked_after_last_request = True
            if patched:
                logger.warning(f"a request replaced {patched[:5]} of {self.model_key}'s code; put back")
                raise ModelChanged(
                    f"refused: this request replaced the model's code ({_names(patched)}); a request "
                    "may edit activations and attention inside its trace, never the server's classes "
                    "or functions. The originals are back; no later request sees the change."
                )
            if changed:
                raise ModelChanged(
                    f"refused: this request wrote to the deployed model's weights ({_names(changed)}); "
                    "a request may edit activations and attention inside its trace, never parameters "
                    "or buffers. The server reloaded the checkpoint; no later request sees the "
                    "change."
                )

    def _reload_if_changed(self, who: str) -> list[str]:
        """Reload the checkpoint when a weight differs from the first load's; return the changed tensors' names."""
        guard = getattr(self, "weights_guard", None)
        if guard is None:
            return []
        started = time.perf_counter()
        changed = guard.changed(self.model._module)
        self.weight_check_s = time.perf_counter() - started
        if changed:
            logger.warning(
                f"{who} changed {len(changed)} weight tensor(s) of {self.model_key} ({changed[:5]}); "
                "reloading the checkpoint"
            )
            self.model = self.load_from_disk()
            still = guard.changed(self.model._module)
            if still:  # never serve a model we cannot vouch for
                raise RuntimeError(
                    f"the reloaded checkpoint of {self.model_key} differs from the one first loaded "
                    f"({still[:5]}); this replica refuses requests"
                )
        return changed

    async def to_cache(self) -> None:
        await self.cancel(KILL_REASON_PREEMPTED)
        self.cached = True

    def from_cache(self, gpu_mem_bytes_by_id) -> None:
        self.gpu_mem_bytes_by_id = gpu_mem_bytes_by_id
        self.cached = False

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _weight_check_on() -> bool:
    return os.environ.get("MAPFLOW_NDIF_WEIGHT_CHECK", "on").lower() not in ("off", "0", "false", "no")


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(CPUModelDeployment):
    pass
