"""Reading AddBiomechanics .b3d files with nimblephysics: arrays out, nothing else.

Runs inside the isolated reader process (`jaxfit.io.isolated`), so it imports
only NumPy and nimblephysics' compiled core (no JAX, no torch). Every
nimblephysics call is wrapped: its C++ chatter is captured and any failure
becomes one MotionFileError naming the file, trial and problem.

File versions handled:
  * files with stored joint centres (AddBiomechanics since early 2024): read
    from the pass's joint-centre matrix after `loadAllFrames`;
  * older files whose header has no joints (`getNumJoints() == 0`, empty
    `jointCenters`): `loadAllFrames` crashes nimblephysics on them, so the pass's
    joint positions `pos` are read frame by frame and the joint centres are
    computed by forward kinematics on the file's own skeleton (`readSkel` of
    that pass), in the order of its joint names.

Segment rotations come from the same skeleton for every file version: per
frame `setPositions(pos)`, then each body node's world rotation (body frame ->
OpenSim world, column vectors: v_world = R v_body), in body-node order. Files
with stored joint centres give the poses as the pass's pose matrix.
"""

import os

import numpy as np

from jaxfit.errors import MotionFileError
from jaxfit.io.nimble import import_nimble_biomechanics, quiet_native_output

CONTACT_FORCE_N = 10.0  # a foot is in contact above this ground force
PASS_NAMES = {'KINEMATICS': 'kinematics', 'DYNAMICS': 'dynamics',
              'LOW_PASS_FILTER': 'lowpass', 'ACC_MINIMIZING_FILTER': 'acc_minimizing'}
JOINT_CENTRE_SOURCES = ('auto', 'fk')


def _call(path, what, fn, *args, **kwargs):
  """Runs a nimblephysics call; failures name the file and what was tried.

  The reason nimblephysics gives is printed to stdout, among chatter: the
  lines that speak of an error or corruption are kept for the message.
  """
  out = []
  try:
    with quiet_native_output() as out:
      result = fn(*args, **kwargs)
  except (RuntimeError, MemoryError, ValueError, IndexError, TypeError) as e:
    lines = [l.strip() for chunk in out for l in chunk.splitlines() if l.strip()]
    reasons = [l for l in lines if any(w in l.lower() for w in ('corrupt', 'error', 'unable', 'fail'))]
    detail = ' '.join(reasons) or str(e) or type(e).__name__
    if detail == 'Caught an unknown exception!' and lines:
      detail = lines[-1]
    raise MotionFileError(path, f'{what} failed: {detail[:300]} (not a valid or complete .b3d file?)') from None
  return result


def _choose_pass(path, name, passes, processing_pass):
  """Index of the requested pass among a trial's passes ('last' = most processed)."""
  if not passes:
    raise MotionFileError(path, f'trial {name!r} has no processing passes')
  if processing_pass in (None, '', 'last', 'auto'):
    return len(passes) - 1
  if isinstance(processing_pass, int) or str(processing_pass).lstrip('-').isdigit():
    k = int(processing_pass)
    if not -len(passes) <= k < len(passes):
      raise MotionFileError(path, f'trial {name!r} has passes {list(passes)}; no pass {k}')
    return k % len(passes)
  if processing_pass in passes:
    return len(passes) - 1 - passes[::-1].index(processing_pass)
  raise MotionFileError(path, f'trial {name!r} has passes {list(passes)}; no {processing_pass!r} pass')


def _open(path):
  if not os.path.isfile(path):
    raise MotionFileError(path, 'no such file')
  if os.path.getsize(path) < 16:
    raise MotionFileError(path, 'file is empty or truncated')
  return _call(path, 'opening', import_nimble_biomechanics().SubjectOnDisk, path)


def _trial_infos(path, subject):
  infos = []
  num_passes = subject.getNumProcessingPasses()
  for t in range(subject.getNumTrials()):
    n_passes = subject.getTrialNumProcessingPasses(t)
    if not 0 <= n_passes <= num_passes:
      raise MotionFileError(path, f'trial {t} claims {n_passes} processing passes; the file has {num_passes}')
    passes = tuple(PASS_NAMES.get(str(subject.getProcessingPassType(k)).split('.')[-1], 'other')
                   for k in range(n_passes))
    dt = subject.getTrialTimestep(t)
    infos.append(dict(index=t, name=subject.getTrialName(t), num_frames=subject.getTrialLength(t),
                      fps=round(1.0 / dt, 6) if dt > 0 else float('nan'), passes=passes))
  return infos


def list_trials(path):
  """[dict(index, name, num_frames, fps, passes)] of a .b3d file."""
  return _trial_infos(path, _open(os.fspath(path)))


def _select(path, infos, trials):
  if not infos:
    raise MotionFileError(path, 'the file holds no trials')
  if not trials:
    return infos
  wanted = [str(t) for t in trials]
  selected = [i for i in infos if i['name'] in wanted or str(i['index']) in wanted]
  if not selected:
    raise MotionFileError(path, f'none of the trials {list(trials)} exist; trials are '
                          f'{[i["name"] for i in infos]}')
  return selected


def _contact_from_forces(path, subject, forces):
  """[T,2] (left, right) contact from ground-body force vectors [bodies,3,T], or None."""
  bodies = list(_call(path, 'reading the ground bodies', subject.getGroundForceBodies))
  if not bodies or forces.shape[0] != len(bodies) or not np.any(forces != 0):
    return None  # no usable force data
  magnitude = np.linalg.norm(forces, axis=1)  # [bodies,T]
  sides = []
  for suffix in ('_l', '_r'):
    idx = [i for i, b in enumerate(bodies) if b.endswith(suffix)]
    if not idx:
      return None
    sides.append(magnitude[idx].max(0) > CONTACT_FORCE_N)
  return np.stack(sides, 1)


def _body_nodes(skel):
  """(names, body nodes) of a skeleton, in body-node order."""
  bodies = [skel.getBodyNode(i) for i in range(skel.getNumBodyNodes())]
  return tuple(b.getName() for b in bodies), bodies


def _rotations_now(bodies):
  """[S,3,3] world rotations (body -> OpenSim world) at the skeleton's current pose."""
  return np.asarray([b.getWorldTransform().rotation() for b in bodies], np.float64)


def _stored_centres(path, subject, skel, info, k, num_joints):
  """Joint centres [T,J,3], forces and body rotations [T,S,3,3] of one trial
  pass, from the stored matrices; rotations by FK of the stored poses (NaN in
  frames whose poses are not finite)."""
  _call(path, 'loading frames', subject.loadAllFrames)
  trial_pass = _call(path, f'reading trial {info["name"]!r}',
                     lambda: subject.getHeaderProto().getTrials()[info['index']].getPasses()[k])
  centres = np.asarray(trial_pass.getJointCenters(), np.float64)
  if centres.shape != (3 * num_joints, info['num_frames']):
    raise MotionFileError(path, f'trial {info["name"]!r}: joint centres have shape {centres.shape}, '
                          f'expected {(3 * num_joints, info["num_frames"])} (truncated file?)')
  wrenches = np.asarray(trial_pass.getGroundBodyWrenches(), np.float64)
  forces = (wrenches.reshape(-1, 6, info['num_frames'])[:, 3:]
            if wrenches.ndim == 2 and wrenches.shape[0] % 6 == 0
            and wrenches.shape[1] == info['num_frames'] else np.zeros((0, 3, 0)))
  poses = np.asarray(_call(path, f'reading the poses of trial {info["name"]!r}', trial_pass.getPoses),
                     np.float64)
  if poses.shape != (skel.getNumDofs(), info['num_frames']):
    raise MotionFileError(path, f'trial {info["name"]!r}: joint positions have shape {poses.shape}, '
                          f'expected {(skel.getNumDofs(), info["num_frames"])} (truncated file?)')
  _, bodies = _body_nodes(skel)
  rotations = np.full((info['num_frames'], len(bodies), 3, 3), np.nan)
  for t in np.flatnonzero(np.all(np.isfinite(poses), axis=0)):
    skel.setPositions(poses[:, t])
    rotations[t] = _rotations_now(bodies)
  return centres.T.reshape(info['num_frames'], num_joints, 3), forces, rotations


def _fk_centres(path, subject, skel, info, k):
  """Joint centres [T,J,3], forces and body rotations [T,S,3,3] by FK of the
  pass's joint positions on the file's skeleton."""
  frames = _call(path, f'reading the frames of trial {info["name"]!r}', subject.readFrames,
                 info['index'], 0, info['num_frames'], includeSensorData=False,
                 includeProcessingPasses=True)
  if len(frames) != info['num_frames']:
    raise MotionFileError(path, f'trial {info["name"]!r}: read {len(frames)} of '
                          f'{info["num_frames"]} frames (truncated file?)')
  num_dofs = skel.getNumDofs()
  joints = [skel.getJoint(i) for i in range(skel.getNumJoints())]
  _, bodies = _body_nodes(skel)
  centres = np.empty((len(frames), len(joints), 3))
  rotations = np.empty((len(frames), len(bodies), 3, 3))
  forces = []
  for t, frame in enumerate(frames):
    if len(frame.processingPasses) <= k:
      raise MotionFileError(path, f'trial {info["name"]!r}, frame {t} lacks processing pass {k}')
    frame_pass = frame.processingPasses[k]
    q = np.asarray(frame_pass.pos, np.float64)
    if q.shape != (num_dofs,) or not np.all(np.isfinite(q)):
      raise MotionFileError(path, f'trial {info["name"]!r}, frame {t}: joint positions have shape '
                            f'{q.shape} (skeleton has {num_dofs} DOFs) or are not finite')
    skel.setPositions(q)
    centres[t] = np.asarray(skel.getJointWorldPositions(joints)).reshape(-1, 3)
    rotations[t] = _rotations_now(bodies)
    forces.append(np.asarray(frame_pass.groundContactForce, np.float64).reshape(-1, 3))
  forces = np.stack(forces, 2) if forces else np.zeros((0, 3, 0))
  return centres, forces, rotations


def read_subject(path, processing_pass=None, trials=None, joint_centres='auto'):
  """Reads the selected trials (names or indices; None = all) of a .b3d file.

  joint_centres: 'auto' (stored centres when the file has them, else FK of the
  pass's joint positions) or 'fk' (always FK). Returns dict(subject meta,
  trials=[dict(name, fps, joint_names, joints [T,J,3] m OpenSim frame,
  contact [T,2] (left, right) bool or None, processing_pass,
  joint_centre_source 'file' | 'fk', segment_names [S] body names,
  segment_rotations [T,S,3,3] body -> OpenSim world, NaN where the poses are
  not finite)]).
  """
  path = os.fspath(path)
  if joint_centres not in JOINT_CENTRE_SOURCES:
    raise MotionFileError(path, f'joint_centres must be one of {JOINT_CENTRE_SOURCES}, got {joint_centres!r}')
  subject = _open(path)
  infos = _select(path, _call(path, 'reading the header', _trial_infos, path, subject), trials)
  header_joints = _call(path, 'reading the header', subject.getNumJoints)
  skeletons = {}
  out = []
  for info in infos:
    if info['num_frames'] <= 0:
      raise MotionFileError(path, f'trial {info["name"]!r} has zero frames')
    k = _choose_pass(path, info['name'], info['passes'], processing_pass)
    if k not in skeletons:
      skeletons[k] = _call(path, f'reading the skeleton of pass {k}', subject.readSkel, k, '', True)
    skel = skeletons[k]
    if skel is None:
      raise MotionFileError(path, f'the OpenSim model stored in pass {k} could not be parsed (corrupt file?)')
    names = [skel.getJoint(i).getName() for i in range(skel.getNumJoints())]
    if not names:
      raise MotionFileError(path, f'pass {k} has a skeleton without joints')
    use_fk = joint_centres == 'fk' or header_joints == 0
    if not use_fk and header_joints != len(names):
      raise MotionFileError(path, f'the header lists {header_joints} joints but the skeleton of '
                            f'pass {k} has {len(names)}')
    centres, forces, rotations = (_fk_centres(path, subject, skel, info, k) if use_fk else
                                  _stored_centres(path, subject, skel, info, k, len(names)))
    out.append(dict(name=info['name'], fps=info['fps'], joint_names=names, joints=centres,
                    segment_names=_body_nodes(skel)[0], segment_rotations=rotations,
                    contact=_contact_from_forces(path, subject, forces),
                    processing_pass=info['passes'][k],
                    joint_centre_source='fk' if use_fk else 'file'))
  sex = _call(path, 'reading the header', subject.getBiologicalSex)
  return dict(height_m=subject.getHeightM() or None, mass_kg=subject.getMassKg() or None,
              sex=sex if sex in ('male', 'female') else None, trials=out)
