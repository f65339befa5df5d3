"""What a report makes, and its error."""

import dataclasses

from jaxfit.errors import check

# The images of <trial>/report/, in the order the subject page shows them.
IMAGES = ('per_joint_mpjpe.png', 'error_over_time.png', 'trajectories.png', 'skeleton.gif',
          'contact_sheet.png', 'body.png', 'segment_orientation.png')


@dataclasses.dataclass(frozen=True)
class ReportOptions:
  """mesh_frames: .obj meshes per trial (evenly spaced, 0 = none);
  animation_s: seconds of the trial the GIF shows (from the start, real speed);
  animation_fps: GIF frame rate; glb: write the glTF animation."""
  mesh_frames: int = 3
  animation_s: float = 6.0
  animation_fps: float = 15.0
  glb: bool = True

  def __post_init__(self):
    check(isinstance(self.mesh_frames, int) and self.mesh_frames >= 0, 'report_mesh_frames',
          f'must be an integer >= 0, got {self.mesh_frames!r}')
    check(self.animation_s > 0, 'report_animation_s', f'must be > 0, got {self.animation_s}')


class ReportError(Exception):
  """A report that cannot be made (missing package or outputs): one line."""
