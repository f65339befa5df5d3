"""The Ray engine (`--config.engine=ray`): one Ray task per input file.

Each task fits its input's pending trials in a Ray worker process and writes
the outputs itself (atomically, into the same `output_dir` layout as the local
engine: on a cluster, a filesystem every node shares). Workers keep the body
model and the compiled programs between tasks. A task whose worker dies is
retried (`max_retries`); the retry skips the trials its first attempt
finished, because their outputs are complete and current. The driver only
collects summary rows and shows progress.

Needs `pip install 'jaxfit[ray]'`.
"""

from typing import Callable, List

from absl import logging

from jaxfit.errors import ConfigError
from jaxfit.io.outputs import summary_row
from jaxfit.run.config import Settings
from jaxfit.run.trial import fit_input, settings_model
from jaxfit.runtime.jax_setup import configure_jax

MAX_RETRIES = 3
_WORKER_STATE = {}


def _fit_input_task(plan, settings: Settings, config_dict, config_sha, verbosity):
  """Runs in a Ray worker: the local engine's fit_input on one input."""
  logging.set_verbosity(verbosity)
  key = (settings.model_path, settings.body, settings.num_betas, settings.fit.dtype,
         settings.compilation_cache_dir)
  if _WORKER_STATE.get('key') != key:
    configure_jax(settings.fit.dtype, settings.compilation_cache_dir)
    _WORKER_STATE.update(key=key, model=settings_model(settings))
  model, model_info = _WORKER_STATE['model']
  return fit_input(plan, settings, model, model_info, config_dict, config_sha)


def _resources(settings: Settings, ray):
  gpus = settings.ray_gpus_per_task
  if gpus < 0:  # auto: a whole GPU per task where the cluster has GPUs
    gpus = 1.0 if ray.cluster_resources().get('GPU', 0) > 0 else 0.0
  return dict(num_cpus=settings.ray_cpus_per_task, num_gpus=gpus)


def run_on_ray(plans, settings: Settings, config_dict, config_sha,
               on_row: Callable[[dict], None]) -> List[dict]:
  """Fits the pending trials of `plans` on Ray; calls on_row as tasks finish."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConfigError('--config.engine', "ray is not installed: pip install 'jaxfit[ray]'") from None
  started_here = not ray.is_initialized()
  if started_here:
    ray.init(address=settings.ray_address or None, include_dashboard=False,
             log_to_driver=True, logging_level='WARNING')
  try:
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_fit_input_task)
    resources = _resources(settings, ray)
    logging.info('ray: %s, %s per task', ray.cluster_resources(), resources)
    running = {}
    for plan in plans:
      if plan.pending:
        ref = task.options(**resources).remote(plan, settings, config_dict, config_sha,
                                               logging.get_verbosity())
        running[ref] = plan
    rows = []
    while running:
      done, _ = ray.wait(list(running), num_returns=1)
      plan = running.pop(done[0])
      try:
        result = ray.get(done[0])
      except Exception as e:  # pylint: disable=broad-except
        # The task failed MAX_RETRIES + 1 times: its trials are reported failed.
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        logging.error('%s: ray task failed: %s', plan.path, reason)
        result = [summary_row(plan.subject, t.name, 'failed', input_path=plan.path,
                       error=f'ray task failed: {reason}') for t in plan.pending]
      for row in result:
        rows.append(row)
        on_row(row)
    return rows
  finally:
    if started_here:
      ray.shutdown()
