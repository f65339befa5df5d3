"""The one compiled optimisation core.

`fit_blocks` optimises a trial split into N blocks of K frames with optax Adam,
scanning over the blocks: block n starts from its own initial values or (warm
start) from block n-1's last frame, and its temporal terms connect to that
frame. The two variants of the reference pipeline are the same function on
different block shapes:
  * simultaneous: N = 1 block of K = T frames, one Adam state for all frames;
  * sequential:   N = T blocks of K = 1 frame, each frame its own Adam state,
                  warm-started from, and smoothed towards, the previous frame.
Loss weights, learning rates, per-joint multipliers and step counts are traced
(`StageHyper`), so every stage with the same block shape reuses one executable.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from jaxfit.body.model import JointModel
from jaxfit.fit.losses import posed_mapped_joints, total_loss
from jaxfit.fit.types import Anchor, FitParams, FitStructure, StageHyper, Targets


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
  """Multiplies updates by a pytree of multipliers (broadcast per leaf).

  After `optax.scale_by_adam` this is a per-joint learning rate: Adam's step is
  invariant to gradient scale, so scaling its output is what changes the rate.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(hyper: StageHyper) -> optax.GradientTransformation:
  """Adam -> per-joint multipliers -> exponentially decaying learning rate."""
  steps = jnp.maximum(jnp.asarray(hyper.num_steps) - 1, 1)
  schedule = lambda count: -hyper.lr * jnp.power(hyper.lr_final_ratio, count / steps)
  return optax.chain(optax.scale_by_adam(),
                     scale_by_multipliers(hyper.lr_mult),
                     optax.scale_by_schedule(schedule))


def optimise_block(model: JointModel, params: FitParams, targets: Targets,
                   anchor: Anchor, hyper: StageHyper, structure: FitStructure):
  """hyper.num_steps Adam steps on one block. Returns (params, final loss).

  Adam runs on z = beta_basis^-1 betas (a well-conditioned shape basis).
  """
  optimizer = make_optimizer(hyper)
  basis = hyper.beta_basis
  to_betas = lambda p: FitParams(basis @ p.betas, p.poses, p.trans, p.offsets)
  loss_fn = lambda p: total_loss(model, p, targets, anchor, structure, hyper.weights)
  grad_fn = jax.grad(lambda pz: loss_fn(to_betas(pz)))

  def step(_, carry):
    p, state = carry
    updates, state = optimizer.update(grad_fn(p), state, p)
    return optax.apply_updates(p, updates), state

  z0 = jnp.linalg.solve(basis, params.betas)
  start = FitParams(z0, params.poses, params.trans, params.offsets)
  params_z, _ = jax.lax.fori_loop(0, hyper.num_steps, step,
                                  (start, optimizer.init(start)))
  # betas0 + P (z - z0): exactly the incoming betas when the shape is held
  # (P P^-1 betas would round them, e.g. past a bound).
  params = FitParams(params.betas + basis @ (params_z.betas - z0), params_z.poses, params_z.trans,
                     params_z.offsets)
  return params, loss_fn(params)


@functools.partial(jax.jit, static_argnames=('structure',))
def fit_blocks(model: JointModel, betas, offsets, poses, trans, targets: Targets,
               anchor: Anchor, hyper: StageHyper, structure: FitStructure):
  """Optimises N blocks of K frames in sequence.

  betas [B] and offsets [M,3] m (shared, carried from block to block);
  poses [N,K,24,3] rad; trans [N,K,3] m; targets: Targets with leading [N,K];
  anchor: the frame before block 0 (valid=0 for none).
  Returns (betas, offsets, poses, trans, loss [N], the anchor after the last
  block: what a following call continues from).
  """
  def body(carry, block):
    betas_c, offsets_c, prev = carry
    poses0, trans0, tgt = block
    ws = hyper.warm_start * prev.valid
    params = FitParams(betas_c,
                       (1 - ws) * poses0 + ws * prev.poses[None],
                       (1 - ws) * trans0 + ws * prev.trans[None], offsets_c)
    params, loss = optimise_block(model, params, tgt, prev, hyper, structure)
    last = FitParams(params.betas, params.poses[-1:], params.trans[-1:], params.offsets)
    last_joints = posed_mapped_joints(model, last, structure)[0]
    exists = tgt.exists[-1]
    new_prev = jax.tree.map(
        lambda new, old: exists * new + (1 - exists) * old,
        Anchor(params.poses[-1], params.trans[-1], last_joints, jnp.ones_like(prev.valid)),
        prev)
    return (params.betas, params.offsets, new_prev), (params.poses, params.trans, loss)

  (betas, offsets, last), (poses, trans, losses) = jax.lax.scan(
      body, (betas, offsets, anchor), (poses, trans, targets))
  return betas, offsets, poses, trans, losses, last
