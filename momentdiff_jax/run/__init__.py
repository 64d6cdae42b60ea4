"""Layer 4: running a training: compiled steps, devices, state on disk.

* `train_step`: train state, optimizer and the jit-compiled update of K replicas.
* `mesh`: the (replica, data) device mesh and the batch / state shardings.
* `checkpointing`: orbax save / restore of latest and best-on-val checkpoints.
* `workdir`: a run's folder (config.json, model construction, restore, overrides).
* `replicas`: K seeds x sweep grid as one stack of replicas.
* `compile_cache`: JAX's persistent compilation cache.
"""
