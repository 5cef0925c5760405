"""Where training runs: this process, every local GPU (MirroredStrategy), or several worker processes
(MultiWorkerMirroredStrategy) on this machine, on the cluster TF_CONFIG names, or on SLURM's tasks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from skin_cancer.schema import DistributeConfig


def cluster_described() -> bool:
    """Whether this process is one task of a described cluster: TF_CONFIG, or a step of several SLURM tasks."""
    return "TF_CONFIG" in os.environ or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def delegated_to_workers(cfg: DistributeConfig, module: str) -> bool:
    """For `multi_worker` outside a described cluster: run stage `module` as `cfg.workers` processes
    forming one (on this machine, or as `srun` tasks inside a SLURM allocation) and return True once
    they all finished; False when this process should train itself."""
    if cfg.strategy != "multi_worker" or cluster_described():
        return False
    command = [sys.executable, "-m", module]
    if "SLURM_JOB_ID" in os.environ:  # an allocation (salloc, sbatch): its nodes run the workers
        _wait([subprocess.Popen(["srun", f"--ntasks={cfg.workers}", *command])])
        return True
    addresses = [f"localhost:{_free_port()}" for _ in range(cfg.workers)]
    processes = []
    for index in range(cfg.workers):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(command, env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}))
    _wait(processes)
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(processes: list[subprocess.Popen]) -> None:
    """Wait for every process; when one fails, stop the others (they would wait for it in their next
    collective operation) and raise ChildProcessError naming it."""
    codes = [None] * len(processes)
    try:
        while None in codes and not any(codes):
            time.sleep(0.2)
            codes = [process.poll() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            process.wait()
    for index, code in enumerate(codes):
        if code:
            raise ChildProcessError(f"training worker {index} of {len(processes)} exited with status {code}")


def strategy(cfg: DistributeConfig):
    """The tf.distribute strategy of `cfg.strategy`; build and compile models inside its scope."""
    import tensorflow as tf

    if cfg.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cfg.strategy == "multi_worker":
        resolver = None  # TF_CONFIG's cluster
        if "TF_CONFIG" not in os.environ:
            # SLURM places the GPUs (--gres, --gpus-per-task); the resolver only names each task's host
            # and port. It pairs every task with GPU slots (and finds none on a CPU node), so it gets
            # one placeholder slot per task and leaves CUDA_VISIBLE_DEVICES as SLURM set it.
            tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
                gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
            )
        return _multi_worker_strategy(resolver)
    return tf.distribute.get_strategy()


def is_chief(distribution) -> bool:
    """Whether this process writes the outputs: always, except on the non-chief workers of a cluster."""
    return distribution.extended.should_checkpoint


def _multi_worker_strategy(resolver):
    import tensorflow as tf

    class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy accepting what Keras 3's `fit` asks of `reduce`
        (keras-team/keras#20585): a nested batch (to build the model) and per-replica scalars (the
        logs) reduced along axis 0. MirroredStrategy accepts both already."""

        def reduce(self, reduce_op, value, axis=None):
            def one(item):
                rank = self.experimental_local_results(item)[0].shape.rank
                return super(MultiWorkerStrategy, self).reduce(reduce_op, item, axis if rank else None)

            return tf.nest.map_structure(one, value)

    return MultiWorkerStrategy(cluster_resolver=resolver)
