"""The built-in bodies `--config.body` names: the open body shipped in
smpl_model/open_body (jaxfit.body.open_body) and the generated demo mannequin
(jaxfit.demo.body_model). Neither is SMPL."""

from jaxfit.body.open_body import BODY_KINDS, open_body_path
from jaxfit.demo.body_model import ensure_demo_body


def builtin_body_path(body):
  """The file of a built-in body ('demo' is generated on first use)."""
  if body == 'demo':
    return ensure_demo_body()
  if body not in BODY_KINDS:
    raise ValueError(f'body must be one of {BODY_KINDS}, got {body!r}')
  return open_body_path(body.partition('_')[2] or 'neutral')
