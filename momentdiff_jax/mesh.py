"""Data-parallel layout: one `data` mesh axis over every device of every process."""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(coordinator: str = '', num_processes: int = 0,
                                 process_id: int = -1) -> None:
  """Starts `jax.distributed` when launched as several processes.

  Explicit arguments win; otherwise the variables our launchers, SLURM and TPU pods
  set are detected by `jax.distributed.initialize()` itself. A single plain process
  does nothing.
  """
  if jax.distributed.is_initialized():
    return
  coordinator = coordinator or os.environ.get('MOMENTDIFF_COORDINATOR', '')
  num_processes = num_processes or int(os.environ.get('MOMENTDIFF_NUM_PROCESSES', '0'))
  if process_id < 0:
    process_id = int(os.environ.get('MOMENTDIFF_PROCESS_ID', '-1'))
  if coordinator and num_processes > 1:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ \
      or 'CLOUD_TPU_TASK_ID' in os.environ:
    jax.distributed.initialize()


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ('data',))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global `jax.Array`s sharded over `data`."""
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def local_batch_size(global_size: int) -> int:
  n = jax.process_count()
  if global_size % jax.device_count():
    raise ValueError(f'batch size {global_size} is not divisible by the {jax.device_count()} '
                     'devices of the mesh')
  return global_size // n
