"""Device layout: a `(replica, data)` mesh over every device of every process.

A run of R replicas (`replicas.py`) splits the devices into gcd(R, #devices) groups
along `replica`, each training R / groups replicas data-parallel over its `data`
devices: R >= #devices (and divisible) puts whole replicas on devices, R = 1 is plain
data parallelism over everything. Batches are sharded over `data` and shared along
`replica`; replica-stacked state is sharded over `replica`.
"""
import math
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


def barrier(name: str, timeout_s: float = 7 * 24 * 3600) -> None:
  """Blocks until every process of a `jax.distributed` run reached `barrier(name)`.

  The coordination service's barrier, not a device collective: processes may arrive
  hours apart (gloo's CPU collectives give up after 30 s), and a process that dies
  makes the others fail here instead of waiting. A single process returns at once.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  # No public API yet; orbax's multi-host barriers use this same client.
  distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def make_mesh(num_replicas: int = 1, devices=None) -> Mesh:
  """`devices` (default: every device, in process order) as (gcd(num_replicas,
  #devices), rest) over ('replica', 'data')."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  r = math.gcd(int(num_replicas), devices.size)
  return Mesh(devices.reshape(r, devices.size // r), ('replica', 'data'))


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replica_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (replica) axis split over `replica`, the rest replicated."""
  return NamedSharding(mesh, P('replica'))


def data_shard(mesh: Mesh) -> tuple[int, int]:
  """(index, count): this process loads part `index` of `count` equal parts of every
  global batch, the part its devices hold along `data` (processes along `replica`
  load the same part)."""
  size = mesh.shape['data']
  cols = sorted({int(np.argwhere(mesh.devices == d)[0][1]) for d in jax.local_devices()
                 if d in mesh.devices.flat})
  n = len(cols)
  if not n or size % n or cols != list(range(cols[0], cols[0] + n)) or cols[0] % n:
    raise ValueError(f'process {jax.process_index()} holds data columns {cols} of {size}: '
                     'not one contiguous equal part')
  return cols[0] // n, size // n


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch (this process's `data_shard` part) -> global
  `jax.Array`s sharded over `data`."""
  sharding = data_sharding(mesh)
  _, count = data_shard(mesh)
  out = {}
  for k, v in local.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(sharding, v,
                                                    (v.shape[0] * count,) + v.shape[1:])
  return out


def local_batch_size(global_size: int, mesh: Mesh) -> int:
  """Examples per step this process loads (`global_size` / its `data_shard` count)."""
  size = mesh.shape['data']
  if global_size % size:
    raise ValueError(f'batch size {global_size} is not divisible by the {size} devices of '
                     f'the mesh\'s data axis (mesh {dict(mesh.shape)})')
  return global_size // data_shard(mesh)[1]
