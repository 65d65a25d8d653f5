"""NDIF model actor for a machine without a GPU (loaded by Ray workers of the local stack, not by mapflow).

Selected with NDIF's own setting ``NDIF_DEFAULT_MODEL_ACTOR_CLASS=mapflow_cpu_actor.CPUModelActor``, this directory on
``PYTHONPATH`` before ``ray start``. The stock actor calls ``torch.cuda`` while loading, caching and cleaning up; this
one overrides only those four steps, so NDIF's request path (queue, deserialise, interleave, save, upload) is its own.

A checkpoint whose processor needs torchvision (LLaVA-NeXT-Video's video processor; there is no CPU torchvision wheel
for the server's torch) gets its tokenizer in the processor's place: the server only runs traces on tensors the client
prepared, so it never preprocesses anything.
"""

import gc
import json
import logging

import ray
from ndif.services.ray.deployments.modeling.base import (
    KILL_REASON_PREEMPTED,
    BaseModelDeployment,
    HuggingFaceModel,
)

logger = logging.getLogger("ndif")


class CPUModelDeployment(BaseModelDeployment):
    def load_from_disk(self):
        try:
            model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name,
                                                    **self.kwargs)
        except ImportError as err:
            from transformers import AutoTokenizer

            repo_id = json.loads(self.model_key.split(":", 1)[1])["repo_id"]
            logger.warning(f"{self.model_key}: processor unavailable ({err}); serving with its tokenizer only")
            model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name,
                                                    processor=AutoTokenizer.from_pretrained(repo_id), **self.kwargs)
        model._module.requires_grad_(False)
        logger.info(f"Loaded {self.model_key} on CPU")
        return model

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


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(CPUModelDeployment):
    pass
