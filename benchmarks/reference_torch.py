"""A PyTorch implementation of the reference pipeline, as a benchmark baseline.

Written here from ../shared/reference/seed-pipeline.md (not part of jaxfit):
  stage 1  per-frame IK: each frame its own Adam (lr 1e-2, 15 iterations) on
           position + 0.5 bone direction + 1e-3 pose reg, pose from zero,
           translation from the pelvis target;
  stage 2  shape: betas (and the sample's poses) on 80 frames in mini-batches
           of 32, Adam lr 5e-3, 100 iterations, position + bone-length match;
  stage 3  per-frame refinement: frame by frame, warm-started from frame t-1,
           its own Adam (lr 1e-2, 40 iterations) with per-joint learning rates
           (hips 1.5x, knees 1x, feet 0.5x: one parameter group per joint),
           temporal term (0.1) against frame t-1, pose and trans reg 1e-3;
  stage 4  sequence: all frames in one Adam (lr 1e-2, 30 iterations) with bone
           length consistency (100), velocity smoothness (0.1) and the rest;
  foot position weight 2x while in contact; max_passes 1.
It uses the same body-model file (joint-only FK, so it is, if anything, faster
than the original, which skinned vertices) and the same input readers, and
writes the same output layout as `python -m jaxfit.main`.

python benchmarks/reference_torch.py --input=<.b3d or joints .npz> \
    --model_path=<SMPL file, '' = demo body> --output_dir=<dir>
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxfit.data.trial import DEFAULT_JOINT_MAP  # noqa: E402
from jaxfit.run.config import base_config, settings_from_config  # noqa: E402
from jaxfit.data.prepare import prepare_trial  # noqa: E402
from jaxfit.io.outputs import trial_dir, write_trial_outputs  # noqa: E402
from jaxfit.data.metrics import fit_metrics  # noqa: E402
from jaxfit.run.trial import settings_model, settings_trials  # noqa: E402  pylint: disable=wrong-import-position

WEIGHTS = dict(bone_direction=0.5, pose_reg=1e-3, trans_reg=1e-3, temporal=0.1,
               bone_length=100.0, velocity=0.1, contact=2.0)
ITERS = dict(init=15, shape=100, pose=40, sequence=30)
LR = dict(init=1e-2, shape=5e-3, pose=1e-2, sequence=1e-2)
JOINT_LR = {1: 1.5, 2: 1.5, 4: 1.0, 5: 1.0, 7: 0.5, 8: 0.5, 10: 0.5, 11: 0.5}


def rodrigues(aa):
  """[...,3] -> [...,3,3]."""
  theta = torch.linalg.norm(aa, dim=-1, keepdim=True).clamp_min(1e-8)
  k = aa / theta
  kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
  zero = torch.zeros_like(kx)
  km = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(aa.shape[:-1] + (3, 3))
  s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
  eye = torch.eye(3, dtype=aa.dtype).expand(km.shape)
  return eye + s * km + (1 - c) * (km @ km)


class TorchSMPLJoints:
  def __init__(self, j_template, j_shapedirs, parents):
    self.j_template = torch.as_tensor(np.asarray(j_template), dtype=torch.float32)
    self.j_shapedirs = torch.as_tensor(np.asarray(j_shapedirs), dtype=torch.float32)
    self.parents = list(parents)

  def __call__(self, betas, poses, trans):
    """betas [10]; poses [N,24,3]; trans [N,3] -> joints [N,24,3]."""
    rest = self.j_template + torch.einsum('jcb,b->jc', self.j_shapedirs, betas)
    rot = rodrigues(poses)
    glob, pos = [rot[:, 0]], [rest[0].expand(len(poses), 3) + trans]
    for j in range(1, 24):
      p = self.parents[j]
      pos.append(pos[p] + torch.einsum('nab,b->na', glob[p], rest[j] - rest[p]))
      glob.append(glob[p] @ rot[:, j])
    return torch.stack(pos, 1)


class Problem:
  def __init__(self, prep, model):
    n = prep.num_frames
    self.n = n
    self.idx = list(prep.structure.smpl_index)
    self.bones = prep.structure.bones
    self.target = torch.as_tensor(prep.targets[:n], dtype=torch.float32)
    valid = torch.as_tensor(prep.valid.astype(np.float32))
    contact = torch.as_tensor(prep.contact[:n], dtype=torch.float32)
    weight = valid.clone()
    for side, feet in enumerate((prep.structure.left_foot, prep.structure.right_foot)):
      for m in feet:
        weight[:, m] *= 1 + (WEIGHTS['contact'] - 1) * contact[:, side]
    self.weight = weight
    self.model = model

  def joints(self, betas, poses, trans):
    return self.model(betas, poses, trans)[:, self.idx]

  def loss(self, pred, frames, poses, trans, prev=None, bone_consistency=False, velocity=False):
    w = self.weight[frames]
    tgt = self.target[frames]
    loss = (w * ((pred - tgt) ** 2).sum(-1)).sum() / w.sum().clamp_min(1e-8)
    par = [p for p, _ in self.bones]
    chi = [c for _, c in self.bones]
    bp, bt = pred[:, chi] - pred[:, par], tgt[:, chi] - tgt[:, par]
    up = bp / bp.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ut = bt / bt.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    loss = loss + WEIGHTS['bone_direction'] * ((up - ut) ** 2).sum(-1).mean()
    loss = loss + WEIGHTS['pose_reg'] * (poses[:, 1:] ** 2).mean()
    loss = loss + WEIGHTS['trans_reg'] * ((trans - self.trans_prior[frames]) ** 2).mean()
    if prev is not None:
      loss = loss + WEIGHTS['temporal'] * (((poses - prev[0]) ** 2).sum() + ((trans - prev[1]) ** 2).sum())
    if len(poses) > 1:
      loss = loss + WEIGHTS['temporal'] * (((poses[1:] - poses[:-1]) ** 2).sum((1, 2)).mean()
                                           + ((trans[1:] - trans[:-1]) ** 2).sum(-1).mean())
    if bone_consistency:
      length = bp.norm(dim=-1)
      loss = loss + WEIGHTS['bone_length'] * ((length - length.mean(0, keepdim=True)) ** 2).mean()
    if velocity and len(pred) > 1:
      loss = loss + WEIGHTS['velocity'] * ((pred[1:] - pred[:-1]) ** 2).sum(-1).mean()
    return loss


def fit(prep, model, log=print):
  torch.set_num_threads(1)  # per-frame steps are tiny: threads only add overhead
  prob = Problem(prep, model)
  n = prob.n
  times = {}
  betas = torch.zeros(10)
  pelvis_rest = model.j_template[prob.idx[0]]
  prob.trans_prior = prob.target[:, 0] - pelvis_rest        # reference: pelvis-initialised
  poses = torch.zeros(n, 24, 3)
  trans = prob.trans_prior.clone()

  t0 = time.perf_counter()                                  # stage 1: per-frame IK
  for t in range(n):
    p = poses[t:t + 1].clone().requires_grad_(True)
    tr = trans[t:t + 1].clone().requires_grad_(True)
    opt = torch.optim.Adam([p, tr], lr=LR['init'])
    for _ in range(ITERS['init']):
      opt.zero_grad()
      loss = prob.loss(prob.joints(betas, p, tr), [t], p, tr)
      loss.backward()
      opt.step()
    poses[t], trans[t] = p.detach()[0], tr.detach()[0]
  times['init'] = time.perf_counter() - t0

  t0 = time.perf_counter()                                  # stage 2: shape
  sample = np.round(np.linspace(0, n - 1, min(80, n))).astype(int)
  b = betas.clone().requires_grad_(True)
  sp = poses[sample].clone().requires_grad_(True)
  st = trans[sample].clone().requires_grad_(True)
  opt = torch.optim.Adam([b, sp, st], lr=LR['shape'])
  tgt_len = None
  for it in range(ITERS['shape']):
    batch = np.arange(len(sample))[(it * 32) % len(sample):][:32]
    opt.zero_grad()
    pred = prob.joints(b, sp[batch], st[batch])
    frames = sample[batch]
    par = [p_ for p_, _ in prob.bones]
    chi = [c for _, c in prob.bones]
    if tgt_len is None:
      tgt_len = (prob.target[sample][:, chi] - prob.target[sample][:, par]).norm(dim=-1).mean(0)
    length = (pred[:, chi] - pred[:, par]).norm(dim=-1)
    w = prob.weight[frames]
    loss = (w * ((pred - prob.target[frames]) ** 2).sum(-1)).sum() / w.sum().clamp_min(1e-8)
    loss = loss + ((length - tgt_len) ** 2).mean()
    loss.backward()
    opt.step()
  betas = b.detach()
  times['shape'] = time.perf_counter() - t0

  t0 = time.perf_counter()                                  # stage 3: sequential per frame
  prev = None
  for t in range(n):
    start = poses[t] if prev is None else prev[0][0]
    start_t = trans[t] if prev is None else prev[1][0]
    groups = [torch.nn.Parameter(start[j].clone()) for j in range(24)]
    tr = torch.nn.Parameter(start_t.clone()[None])
    opt = torch.optim.Adam([{'params': [g], 'lr': LR['pose'] * JOINT_LR.get(j, 1.0)}
                            for j, g in enumerate(groups)] + [{'params': [tr]}], lr=LR['pose'])
    for _ in range(ITERS['pose']):
      opt.zero_grad()
      p = torch.stack(groups)[None]
      loss = prob.loss(prob.joints(betas, p, tr), [t], p, tr, prev=prev)
      loss.backward()
      opt.step()
    poses[t], trans[t] = torch.stack(groups).detach(), tr.detach()[0]
    prev = (poses[t:t + 1].clone(), trans[t:t + 1].clone())
  times['pose'] = time.perf_counter() - t0

  t0 = time.perf_counter()                                  # stage 4: whole sequence
  p = poses.clone().requires_grad_(True)
  tr = trans.clone().requires_grad_(True)
  opt = torch.optim.Adam([p, tr], lr=LR['sequence'])
  frames = np.arange(n)
  for _ in range(ITERS['sequence']):
    opt.zero_grad()
    loss = prob.loss(prob.joints(betas, p, tr), frames, p, tr, bone_consistency=True, velocity=True)
    loss.backward()
    opt.step()
  poses, trans = p.detach(), tr.detach()
  times['sequence'] = time.perf_counter() - t0
  times['total'] = sum(times.values())
  with torch.no_grad():
    joints = model(betas, poses, trans).numpy()
  return betas.numpy(), poses.numpy(), trans.numpy(), joints, times


def run(input_path, model_path, output_dir, log=print):
  """Fits every trial of input; writes jaxfit's output layout. Returns rows."""
  config = base_config()
  config.body = 'demo'   # with model_path '': the mannequin, as the published comparison
  config.model_path = model_path
  config.input = input_path
  settings = settings_from_config(config)
  body, info = settings_model(settings)
  model = TorchSMPLJoints(body.J_template, body.J_shapedirs, body.parents)
  rows = []
  for trial in settings_trials(input_path, settings):
    prep = prepare_trial(trial, settings.prepare)
    betas, poses, trans, joints, times = fit(prep, model, log)
    idx = list(prep.structure.smpl_index)
    metrics = fit_metrics(joints[:, idx], prep.targets[:prep.num_frames], prep.valid, trial.fps,
                          prep.mapping.source_names)
    metrics['time_s'] = times
    out = trial_dir(output_dir, trial.subject, trial.name)
    write_trial_outputs(out, betas=betas, poses=poses, trans=trans, gender=body.gender,
                        fps=trial.fps, mapping=prep.mapping, model_info=info, metrics=metrics,
                        config=dict(pipeline='reference_torch', weights=WEIGHTS, iters=ITERS,
                                    lr=LR, joint_lr=JOINT_LR, input=input_path,
                                    joint_map=DEFAULT_JOINT_MAP),
                        contact_source=prep.contact_source, offsets=np.zeros((len(idx), 3)))
    log(f'{trial.subject}/{trial.name}: MPJPE {metrics["mpjpe_mm"]:.1f} mm, '
        f'{times["total"]:.1f} s -> {out}')
    rows.append(dict(trial=trial.name, frames=prep.num_frames, metrics=metrics, output=out))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--input', required=True)
  parser.add_argument('--model_path', default='')
  parser.add_argument('--output_dir', default='outputs/reference_torch')
  args = parser.parse_args()
  rows = run(args.input, args.model_path, args.output_dir)
  print(json.dumps([{k: v for k, v in r.items() if k != 'metrics'} for r in rows], indent=1))


if __name__ == '__main__':
  main()
